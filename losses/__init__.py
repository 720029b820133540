"""The margin heads (ArcFace, CosFace, combined) and the training objective built on them.
May import data/ and nets/."""
