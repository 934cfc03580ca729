"""The standalone LoRA trainer (diffusers + PEFT); it knows no Discord and no database."""
