"""Speech corpora and forced alignment for training and evaluating the lip-sync models."""
