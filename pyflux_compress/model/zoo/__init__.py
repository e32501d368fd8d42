"""Staging area for issue 12's layers until the layer registry lands (then each moves to model/layers/)."""
