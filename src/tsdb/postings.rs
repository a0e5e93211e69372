//! Operations on sorted postings lists: intersection, union and difference.
