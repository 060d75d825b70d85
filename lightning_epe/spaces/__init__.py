"""Candidate spaces: enumerate or sample candidates and build networks from them."""
from .base import CandidateSpace
from .darts import DARTSSpace
from .listed import ListSpace
from .nb101 import NB101Space
from .nb201 import OPS as NB201_OPS
from .nb201 import NB201Space, parse_arch
from .timm import TimmSpace

__all__ = ["CandidateSpace", "DARTSSpace", "ListSpace", "NB101Space", "NB201Space", "NB201_OPS", "TimmSpace",
           "parse_arch"]
