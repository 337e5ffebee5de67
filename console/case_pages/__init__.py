"""One module per case page (leaderboard, shortener, filesync, metrics), the helpers they
share (common), and the pure chart geometry they draw with (charts). console/cases.py lists
them and routes /cases/<case> to them."""
