"""Data in, state out.

inputs.py       training data as the loop reads it (arrays and tf.data streams)
streaming.py    a stream's statistics in one pass (standardisation, a sample)
transform.py    the standardisation between data units and the model's units
checkpoint.py   saving and loading a model and a run, versioned and atomic
"""
