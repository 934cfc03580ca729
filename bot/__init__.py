"""The discord.py adapter: cogs, views, embeds and the outbox relay."""
