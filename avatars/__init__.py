"""What an avatar is: bundle format and loading, enrollment from a photo, the keypoint rig.

Serving code imports ``avatars.load`` and ``avatars.rig``; ``avatars.enroll`` (mediapipe) is
imported only by enrollment.
"""

from avatars.bundle import Avatar, BundleError, load

__all__ = ["Avatar", "BundleError", "load"]
