"""The three phases of a task's life: dev (an agent), verify and integrate (deterministic)."""
