"""Generated from protos/hourglass/shortener/v1/shortener.proto (scripts/generate-protos)."""
