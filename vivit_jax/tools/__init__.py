"""Command-line tools: video conversion to TFRecords."""
