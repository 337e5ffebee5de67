"""The web console: server-rendered pages over the gRPC API, for people who open a browser
first. It holds no permission system of its own: every page calls the API with the token the
user signed in with, so a page shows exactly what that token may see (docs/architecture.md,
"The console")."""
