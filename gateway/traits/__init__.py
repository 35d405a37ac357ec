"""What a request is: pure functions of the request and its image, computed at most once.

Portrait (a face detector that ships in scikit-image), camera language in the prompt, volume,
sizes; `advice` turns them into prompt warnings. Nothing here reads the database or the network.
"""

from gateway.traits.advice import prompt_warnings
from gateway.traits.traits import Load, Traits, TraitSettings

__all__ = ["Load", "TraitSettings", "Traits", "prompt_warnings"]
