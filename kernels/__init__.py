"""Triton kernels, installed as the import package `fastssl_kernels` (see README).

nt_xent: fused NT-Xent / InfoNCE (forward, backward, autograd.Function); pairs: which key is
each query's positive and which is itself, in plain torch, shared with fastssl's torch paths;
configs: per-GPU tile table; aot: ahead-of-time compilation report. This layer imports torch and
triton, never `fastssl`; the public loss API is `fastssl.losses`.
"""
