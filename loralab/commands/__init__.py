"""The `loralab` subcommands, one module per group."""
