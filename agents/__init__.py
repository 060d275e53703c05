"""Stream processors: the likes agent and the logic it folds events with."""

from ._confirm import Confirmer, DeliveryFailed
from ._fold import Fold, fold
from ._likes import LikesAgent, Topics
from ._positions import Positions

__all__ = ["Confirmer", "DeliveryFailed", "Fold", "LikesAgent", "Positions", "Topics", "fold"]
