"""Generated from protos/hourglass/filesync/v1/filesync.proto (scripts/generate-protos)."""
