"""`loralab demo`: the whole lab on one machine, offline.

A simulated Discord guild (simcord) runs the real bot; a real Celery worker process
trains on a tiny base model built in code; scripted members play the story of one
ticket from request to release while a transcript is printed.

- `lab`: the embedded lab (paths, settings, base model, the worker process, the bot)
- `materials`: the images and archives the scripted members upload
- `transcript`: what is printed as the story goes, with per-phase timings
- `story`: the script itself
- `report`: the HTML report of the channels and the JSON summary
- `runner`: puts them together (`run_demo`)
"""
