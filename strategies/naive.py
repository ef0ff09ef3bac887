"""Naive fine-tuning: train on each experience in turn with no protection against forgetting."""

from cl.strategy import Strategy


class Naive(Strategy):
    """The lower bound of every continual-learning comparison: plain SGD on the current task."""

    name = "naive"
    member_wise = True
