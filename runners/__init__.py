"""Turning a plan into TRL settings and a launched, monitored run."""
