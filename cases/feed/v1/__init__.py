"""Generated from protos/hourglass/feed/v1/feed.proto (scripts/generate-protos)."""
