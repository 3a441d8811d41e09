"""Triton kernels, installed as the import package `fastssl_kernels` (see README)."""
