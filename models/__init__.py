"""semnorm.models: generators, discriminators, encoders and losses of the SPADE family.

Built on the layers of :mod:`semnorm.nn`; see the project issues for what is still to come.
"""
