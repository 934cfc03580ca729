"""What `/lab setup` creates, and the guides it pins (our own words, from the seeds)."""

from __future__ import annotations

from lab.lifecycle import TicketState

REQUESTS_FORUM = "lab-requests"
TEXT_CHANNELS = {
    "job_board": ("job-board", "Ready training jobs. Trainers press Claim to take one."),
    "testing": ("testing", "Sample grids to vote on."),
    "releases": ("releases", "Finished LoRAs, with credits."),
    "guide": ("lab-guide", "How the lab works, one guide per role."),
}
STATUS_TAGS = {state.value: state.value.upper()[:20] for state in TicketState}

GUIDES: dict[str, str] = {
    "Welcome": (
        "**How LoRA Lab works**\n"
        "Every LoRA starts as a request (`/lora request`) and becomes a post in "
        "#lab-requests. It moves through small phases that different people take: "
        "collecting images, captioning, review, training on the lab's GPUs, testing, "
        "release. Pick the roles you want with the buttons below or `/role join`. "
        "You never need your own GPU."
    ),
    "Dataset": (
        "**Dataset guide (Curators)**\n"
        "Quality beats quantity. Aim for 20–30 varied images of the subject (SD1.5 "
        "needs at least 15, SDXL at least 12): different poses, angles, outfits, "
        "lighting and backgrounds, so the model learns the subject and not one photo. "
        "Drop blurry, tiny, heavily cropped or watermarked images, and near-copies of the "
        "same shot. Crop so the subject fills the frame; odd aspect ratios are fine, the "
        "trainer buckets them. Upload with `/dataset upload` (an image or a .zip) in the "
        "ticket's post; each file gets ✅ or the reason it was refused."
    ),
    "Captioning": (
        "**Captioning guide (Captioners)**\n"
        "A caption starts with the trigger word, then the class (e.g. `ar1a, woman`), "
        "then what *changes* between images: pose, clothing, background, framing. Do not "
        "describe what should always be part of the subject (eye colour of a character, "
        "the brush texture of a style): leaving it out ties it to the trigger word. Keep "
        "tags short and consistent; `/caption tags` shows how often each one is used, "
        "`/caption bulk` fixes many at once."
    ),
    "Training": (
        "**Training guide (Trainers)**\n"
        "Claim a job on #job-board, pick a preset with `/train config` and change only "
        "what you understand: more epochs or a higher learning rate learn faster but "
        "overfit sooner (the subject appears everywhere, images lose variety); a larger "
        "network rank holds more detail but needs more images. Save several epochs and "
        "let testers compare them. `/train start` queues the run on a lab GPU; progress "
        "is edited into one message in the ticket's post."
    ),
    "Testing": (
        "**Testing guide (Testers)**\n"
        "Each sample grid shows the same prompts across epochs or LoRA weights. Look for "
        "likeness to the references, flexibility (can it change clothes, pose, style?), "
        "and damage (burned colours, repeated backgrounds, artefacts at weight 1.0). Vote "
        "👍 or 👎 on each grid (you can change your vote) and ask for more samples with "
        "`/test prompts`."
    ),
}


# --- who may do what in the lab's channels (set by /lab setup, kept on each rerun) ----

READ_ONLY_CHANNELS = ("guide", "releases", "job_board")
"""Written by the bot alone: members read, react and press buttons there."""

BOT_CAN = {
    "view_channel": True,
    "send_messages": True,
    "send_messages_in_threads": True,
    "create_public_threads": True,
    "manage_threads": True,
    "manage_messages": True,
    "embed_links": True,
    "attach_files": True,
    "read_message_history": True,
}
"""The bot's own overwrite: denying @everyone must not lock the bot out as well."""

MEMBERS_READ_ONLY = {
    "send_messages": False,
    "send_messages_in_threads": False,
    "create_public_threads": False,
    "create_private_threads": False,
}
MEMBERS_IN_REQUESTS = {
    "send_messages": False,  # in a forum this is "create posts": /lora request does that
    "create_public_threads": False,
    "create_private_threads": False,
    "send_messages_in_threads": True,  # replies (and uploads) in a ticket's post
}
ADMINS_CAN = {"send_messages": True, "send_messages_in_threads": True, "manage_messages": True}
ADMINS_IN_REQUESTS = {"send_messages_in_threads": True, "manage_threads": True}


def overwrites_for(channel_key: str) -> tuple[dict[str, bool], dict[str, bool]] | None:
    """(members', Lab Admins') overwrite of a lab channel; ``None`` leaves it open."""
    if channel_key == "requests":
        return MEMBERS_IN_REQUESTS, ADMINS_IN_REQUESTS
    if channel_key in READ_ONLY_CHANNELS:
        return MEMBERS_READ_ONLY, ADMINS_CAN
    return None
