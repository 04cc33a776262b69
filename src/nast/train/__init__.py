"""NAST training: LoRA/PEFT trainer with per-layer CTE gradient scaling, and the baselines."""
