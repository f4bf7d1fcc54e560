"""facecast as the avatar of a voice agent built with another framework (optional extras).

* ``stream``: the shared adapter — an ``AvatarEngine`` (one process's renderer, motion model and
  frame scheduler, the same ``runtime.live`` pipeline ``facecast serve`` runs) and its
  ``AvatarStream`` s: speech audio in at any rate, ``PairedFrame`` s out (one composited image
  with exactly the audio it plays), interruption and playback position.
* ``pipecat_service``: ``FacecastVideoService``, a Pipecat ``FrameProcessor`` on that adapter
  (extra ``facecast[pipecat]``); ``pipecat_demo``: ``facecast pipecat-demo``, an example bot.
* ``livekit_avatar``: ``FacecastVideoGenerator`` (LiveKit Agents' ``VideoGenerator``) and the
  in-process avatar; ``livekit_worker``: ``facecast livekit``, the avatar worker that LiveKit's
  dispatcher places rooms on by facecast's measured capacity (extra ``facecast[livekit]``).

Nothing here is imported by the rest of facecast; each module imports its framework itself.
"""
