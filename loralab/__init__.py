"""The `loralab` command line: entry points that wire the packages together."""
