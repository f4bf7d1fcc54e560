"""Offline output: ``facecast render`` (speech or text to MP4), the rig preview, and the one MP4
writer every file-producing path uses.
"""
