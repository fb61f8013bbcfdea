"""What one trial runs: phase plans, the phase engine, launch, models and data."""
