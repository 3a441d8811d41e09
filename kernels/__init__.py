"""Triton kernels, installed as the import package `fastssl_kernels` (see README).

nt_xent: fused NT-Xent / InfoNCE (forward, backward, autograd.Function); configs: per-GPU tile
table; aot: ahead-of-time compilation report. This layer imports torch and triton, never
`fastssl`; the public loss API is `fastssl.losses`.
"""
