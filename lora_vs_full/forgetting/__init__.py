"""Forgetting of the pre-training distribution (PAPER.md sections 6-7).

* ``corpus``: the pre-training-like text sample (WikiText from the Hub or any local text file)
* ``pseudoloss``: masked-LM pseudo-loss of an encoder with an MLM head
* ``mlm_head``: the base's pretrained MLM head, or a cached probe head for head-less bases
* ``intervention``: scaling intruder dimensions (and a pretrained-neighbour control) by lambda
"""
