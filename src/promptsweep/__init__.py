"""promptsweep: how additional prompts change ControlNet (Canny) generations."""
