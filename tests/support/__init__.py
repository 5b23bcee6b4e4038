"""Test machinery shared by tests, bench/ and hack/demo.py: a local control plane and the
operator as a process. Not part of the shipped package."""
