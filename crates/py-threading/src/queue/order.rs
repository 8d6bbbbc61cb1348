//! Which item leaves first: the one thing `Queue`, `LifoQueue` and `PriorityQueue` do
//! differently (CPython's subclasses override only `_put`, `_get` and `_qsize`), in CPython's
//! containers: a deque, a list used as a stack, and a binary heap (`heapq`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Where `put` leaves an item and which one `get` takes.
pub trait Order<T>: Default {
    fn push(&mut self, item: T);
    fn pop(&mut self) -> Option<T>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// First in, first out (`queue.Queue`).
impl<T> Order<T> for VecDeque<T> {
    fn push(&mut self, item: T) {
        self.push_back(item);
    }
    fn pop(&mut self) -> Option<T> {
        self.pop_front()
    }
    fn len(&self) -> usize {
        VecDeque::len(self)
    }
}

/// Last in, first out (`queue.LifoQueue`, a stack).
impl<T> Order<T> for Vec<T> {
    fn push(&mut self, item: T) {
        Vec::push(self, item);
    }
    fn pop(&mut self) -> Option<T> {
        Vec::pop(self)
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// Lowest first (`queue.PriorityQueue`): items are usually `(priority, data)` tuples, compared
/// as Python compares them, field by field; `Reverse` turns std's max-heap into `heapq`'s
/// min-heap.
impl<T: Ord> Order<T> for BinaryHeap<Reverse<T>> {
    fn push(&mut self, item: T) {
        BinaryHeap::push(self, Reverse(item));
    }
    fn pop(&mut self) -> Option<T> {
        BinaryHeap::pop(self).map(|Reverse(item)| item)
    }
    fn len(&self) -> usize {
        BinaryHeap::len(self)
    }
}
