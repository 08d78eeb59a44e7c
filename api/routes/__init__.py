"""One router per resource: health, predictions, the served model."""
