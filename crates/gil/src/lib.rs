//! gil — the pieces of the `gil` demo that the bench suite `gil` measures too: the notes'
//! countdown ([`countdown`]), a global interpreter lock built as CPython builds it ([`sim`]),
//! and the convoy's echo round trips ([`echo`]).

pub mod countdown;
pub mod echo;
pub mod sim;
