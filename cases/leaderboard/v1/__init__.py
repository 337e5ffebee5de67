"""Generated from protos/hourglass/leaderboard/v1/leaderboard.proto (scripts/generate-protos)."""
