"""Procedural reasoning tasks and the tiny tokenizer that the embedded base model is pretrained with."""
