"""Webcam-driven mode: a video source (camera or file), the mediapipe Face Mesh tracker, and the
driver that turns tracked faces into rig coefficients and head pose for a live session.
"""
