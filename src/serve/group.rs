//! Group commit: many threads each hand in one item, and one of them (the
//! leader) commits every item handed in so far in one go; each thread gets
//! its own item's result. While a group is being committed the next one
//! gathers, so under load one durable write serves many requests.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Items of type `T` committed in groups, each answered with an `R`.
pub(crate) struct Group<T, R> {
    state: Mutex<State<T, R>>,
    done: Condvar,
}

struct State<T, R> {
    pending: Vec<(u64, T)>,
    results: HashMap<u64, R>,
    next: u64,
    busy: bool,
}

impl<T, R> Group<T, R> {
    pub(crate) fn new() -> Group<T, R> {
        Group {
            state: Mutex::new(State {
                pending: Vec::new(),
                results: HashMap::new(),
                next: 0,
                busy: false,
            }),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T, R>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands in `item` and waits for its result. `commit` gets a group of
    /// items and must answer each, in order.
    pub(crate) fn submit(&self, item: T, commit: impl Fn(Vec<T>) -> Vec<R>) -> R {
        let mut st = self.lock();
        let ticket = st.next;
        st.next += 1;
        st.pending.push((ticket, item));
        loop {
            if let Some(r) = st.results.remove(&ticket) {
                return r;
            }
            if st.busy {
                st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.busy = true;
            let (tickets, items): (Vec<u64>, Vec<T>) =
                std::mem::take(&mut st.pending).into_iter().unzip();
            drop(st);
            let results = commit(items);
            st = self.lock();
            debug_assert_eq!(results.len(), tickets.len());
            for (t, r) in tickets.into_iter().zip(results) {
                st.results.insert(t, r);
            }
            st.busy = false;
            self.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_item_gets_its_own_result_and_groups_form_under_load() {
        let g = Group::<u64, u64>::new();
        let commits = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..16u64 {
                let (g, commits) = (&g, &commits);
                s.spawn(move || {
                    for i in 0..200 {
                        let item = t * 1000 + i;
                        let r = g.submit(item, |items| {
                            commits.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            items.iter().map(|x| x * 2).collect()
                        });
                        assert_eq!(r, item * 2);
                    }
                });
            }
        });
        let n = commits.load(Ordering::Relaxed);
        assert!(n < 16 * 200, "{n} commits for 3200 items: no grouping");
    }
}
