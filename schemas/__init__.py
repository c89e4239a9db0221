"""Data contracts shared by every layer: preprocessing of model inputs and explanation parameters."""
