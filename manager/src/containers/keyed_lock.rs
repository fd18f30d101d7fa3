//! One lock per container: a start and a stop/kill/rm of the same container take turns,
//! so a restart policy's start never races a user's stop; other containers go on.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};

#[derive(Default)]
pub struct KeyedLock {
    held: Mutex<HashSet<String>>,
    freed: Condvar,
}

pub struct Guard<'a> {
    lock: &'a KeyedLock,
    key: String,
}

impl KeyedLock {
    pub fn lock(&self, key: String) -> Guard<'_> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held.contains(&key) {
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.insert(key.clone());
        Guard { lock: self, key }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let mut held = self.lock.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.key);
        drop(held);
        self.lock.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn same_key_waits_other_keys_do_not() {
        let l = Arc::new(KeyedLock::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let a = l.lock("a".into());
        // Another key is free while "a" is held.
        drop(l.lock("b".into()));
        let (l2, in2) = (l.clone(), inside.clone());
        let t = std::thread::spawn(move || {
            let _g = l2.lock("a".into());
            in2.store(1, Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(inside.load(Ordering::SeqCst), 0, "entered while held");
        drop(a);
        t.join().unwrap();
        assert_eq!(inside.load(Ordering::SeqCst), 1);
    }
}
