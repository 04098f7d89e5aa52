"""What the notebooks share.

data.py       synthetic mixtures (the post's data and harder ones)
plotting.py   the figures' helpers
seedpost.py   the post this project grew out of, fitted its way, for comparison
"""
