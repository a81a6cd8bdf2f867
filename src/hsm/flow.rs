//! One file's downloads while it is being hydrated: what has landed in the file (written,
//! whether or not the xattr record says so yet), what is being fetched, and where its reader
//! is. Accesses wait here for their own bytes only, woken as bytes land, so a reader goes on
//! while the rest of a large window is still arriving. No I/O: the hydrator drives it.

use super::meta::Ranges;
use super::policy::{self, Policy, Reader, Window};
use std::sync::Mutex;
use tokio::sync::watch;

/// The download state of one file (one version of it).
pub struct Flow {
    /// The record's version token the bytes come from: a flow never serves another version.
    pub version: String,
    state: Mutex<State>,
    /// Bumped whenever bytes land or a fetch ends; waiters watch it.
    wake: watch::Sender<u64>,
    /// Serialises changes of the file's xattr record (read, change, write).
    pub record: tokio::sync::Mutex<()>,
    /// The file changed under the flow (truncated, written by a program): nothing more is
    /// written into it or recorded.
    dead: std::sync::atomic::AtomicBool,
    /// Set with `dead` when the flow was stopped to free the file ([`Flow::stop_for_free`]).
    freed: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct State {
    reader: Reader,
    /// Bytes written into the file (the record's ranges included).
    landed: Ranges,
    /// Pieces being fetched.
    flight: Vec<(u64, u64)>,
    /// The errno of the last failed piece (what a reader whose bytes it held gets).
    last_errno: Option<i32>,
    /// Pieces that ended and whose bytes are not recorded in the xattr yet.
    recording: usize,
}

/// What an access found.
#[derive(Debug, PartialEq, Eq)]
pub enum Wait {
    /// Its bytes are in the file.
    Ready,
    /// Its bytes are being fetched: wait.
    Pending,
    /// Nothing will bring some of its bytes: the last failure's errno.
    Failed(i32),
}

impl Flow {
    /// A flow for a file whose record says `recorded` is local.
    pub fn new(version: &str, recorded: &Ranges) -> Flow {
        Flow {
            version: version.to_string(),
            state: Mutex::new(State {
                landed: recorded.clone(),
                ..State::default()
            }),
            wake: watch::Sender::new(0),
            record: tokio::sync::Mutex::new(()),
            dead: Default::default(),
            freed: Default::default(),
        }
    }

    /// Plans an access of `[start, end)` in a file of `size` bytes: returns the pieces to
    /// start fetching now (registered as in flight), none if what it needs is here or on
    /// its way. A sequential reader's window grows and is asked for ahead of it. `cap`
    /// bounds the size of a piece (a download limit's second's worth).
    pub fn plan(
        &self,
        p: &Policy,
        start: u64,
        end: u64,
        size: u64,
        cap: Option<u64>,
    ) -> Vec<(u64, u64)> {
        let mut st = self.state.lock().unwrap();
        let Window { range, mut piece } = policy::window(p, &mut st.reader, start, end, size);
        if let Some(c) = cap {
            let chunk = p.transfer.chunk.max(4096);
            let c = c.max(chunk);
            piece = if piece == 0 {
                // Spread evenly, but no piece above the cap.
                let total = range.1.saturating_sub(range.0);
                (total / p.transfer.parallel.max(1) as u64).clamp(chunk, c)
            } else {
                piece.min(c)
            };
        }
        let mut have = st.landed.clone();
        for &(a, b) in &st.flight {
            have.insert(a, b);
        }
        let todo = have.missing(range.0, range.1);
        let pieces = p.transfer.split_into(&todo, piece);
        st.flight.extend_from_slice(&pieces);
        if !pieces.is_empty() {
            st.last_errno = None;
        }
        pieces
    }

    /// Whether `[start, end)` is here, coming, or lost.
    pub fn check(&self, start: u64, end: u64) -> Wait {
        let st = self.state.lock().unwrap();
        let missing = st.landed.missing(start, end);
        if missing.is_empty() {
            return Wait::Ready;
        }
        let mut coming = Ranges::default();
        for &(a, b) in &st.flight {
            coming.insert(a, b);
        }
        if missing.iter().all(|&(a, b)| coming.covers(a, b)) {
            Wait::Pending
        } else {
            Wait::Failed(st.last_errno.unwrap_or(libc::EIO))
        }
    }

    /// The file changed under the flow: its downloads stop before their next write.
    pub fn kill(&self) {
        self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.send_modify(|n| *n += 1);
    }

    /// The flow's downloads stop (as [`Flow::kill`]) because the file is being freed, not
    /// because it changed: an access that found this flow just before may start another.
    pub fn stop_for_free(&self) {
        self.freed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.kill();
    }

    pub fn stopped_for_free(&self) -> bool {
        self.freed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether an access waits on the flow (for its bytes, or for their record).
    pub fn watched(&self) -> bool {
        self.wake.receiver_count() > 0
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether anything is being fetched.
    pub fn busy(&self) -> bool {
        !self.state.lock().unwrap().flight.is_empty()
    }

    /// Whether `[start, end)` is in the file.
    pub fn has(&self, start: u64, end: u64) -> bool {
        self.state.lock().unwrap().landed.covers(start, end)
    }

    /// Bytes `[start, start+len)` were written into the file.
    pub fn landed(&self, start: u64, len: u64) {
        self.state.lock().unwrap().landed.insert(start, start + len);
        self.wake.send_modify(|n| *n += 1);
    }

    /// A piece's fetch ended (all of it landed, or `errno`); returns the parts of it that
    /// landed, which the caller records and then says so ([`Flow::recorded`]).
    pub fn ended(&self, piece: (u64, u64), errno: Option<i32>) -> Vec<(u64, u64)> {
        let mut st = self.state.lock().unwrap();
        if errno.is_none() {
            st.landed.insert(piece.0, piece.1);
        }
        if let Some(i) = st.flight.iter().position(|&p| p == piece) {
            st.flight.swap_remove(i);
        }
        if errno.is_some() {
            st.last_errno = errno;
        }
        let present = present(&st.landed, piece.0, piece.1);
        if !present.is_empty() {
            st.recording += 1;
        }
        drop(st);
        self.wake.send_modify(|n| *n += 1);
        present
    }

    /// The parts [`Flow::ended`] returned are recorded (or could not be).
    pub fn recorded(&self) {
        let mut st = self.state.lock().unwrap();
        st.recording = st.recording.saturating_sub(1);
        drop(st);
        self.wake.send_modify(|n| *n += 1);
    }

    /// Waits until no piece is in flight and every piece that ended is recorded (its
    /// bytes may all have landed before its request ended). An access that needed the last
    /// bytes of a file returns once the file's record says it is complete and no download
    /// holds it open, so a program that has read a whole file sees it local (and can free
    /// it) at once.
    pub async fn settled(&self) {
        let mut rx = self.wake.subscribe();
        while {
            let st = self.state.lock().unwrap();
            st.recording > 0 || !st.flight.is_empty()
        } {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// [`Flow::settled`], for at most `bound`.
    pub async fn settled_within(&self, bound: std::time::Duration) {
        if tokio::time::timeout(bound, self.settled()).await.is_err() {
            tracing::warn!(?bound, "a file's record lags its bytes");
        }
    }

    /// Waits until `[start, end)` is in the file (`Ok`) or nothing will bring it (the errno).
    pub async fn wait(&self, start: u64, end: u64) -> Result<(), i32> {
        let mut rx = self.wake.subscribe();
        loop {
            match self.check(start, end) {
                Wait::Ready => return Ok(()),
                Wait::Failed(e) => return Err(e),
                Wait::Pending => {}
            }
            if rx.changed().await.is_err() {
                return Err(libc::EIO);
            }
        }
    }
}

/// The parts of `[start, end)` that `r` covers.
fn present(r: &Ranges, start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut cur = start;
    for (a, b) in r.missing(start, end) {
        if a > cur {
            out.push((cur, a));
        }
        cur = b;
    }
    if cur < end {
        out.push((cur, end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_reader_waits_for_its_own_bytes_not_the_whole_window() {
        let p = Policy::default();
        let f = Flow::new("e:1", &Ranges::default());
        let size = 1 << 30;
        assert_eq!(f.plan(&p, 0, MIB, size, None), [(0, MIB)]);
        assert_eq!(f.check(0, MIB), Wait::Pending);
        // A second reader of the same bytes starts nothing new.
        assert!(f.plan(&p, 0, 4096, size, None).is_empty());
        f.landed(0, 256 << 10);
        assert_eq!(f.check(0, 4096), Wait::Ready);
        assert_eq!(f.check(0, MIB), Wait::Pending);
        assert_eq!(f.ended((0, MIB), None), [(0, MIB)]);
        assert_eq!(f.check(0, MIB), Wait::Ready);
        // Sequential: a window ahead, in pieces.
        let w = f.plan(&p, MIB, 2 * MIB, size, None);
        assert_eq!(w, [(MIB, 6 * MIB), (6 * MIB, 10 * MIB)]);
        f.landed(MIB, MIB);
        assert_eq!(f.check(MIB, 2 * MIB), Wait::Ready);
    }

    #[test]
    fn a_download_limit_caps_the_pieces() {
        let p = Policy::default();
        let f = Flow::new("e:1", &Ranges::default());
        let pieces = f.plan(&p, 0, 16 * MIB, 1 << 30, Some(2 * MIB));
        assert_eq!(pieces.len(), 8);
        assert!(pieces.iter().all(|(a, b)| b - a <= 2 * MIB));
        // Never below a chunk.
        let f = Flow::new("e:1", &Ranges::default());
        assert_eq!(f.plan(&p, 0, 2 * MIB, 1 << 30, Some(10)).len(), 2);
    }

    #[test]
    fn a_failed_piece_fails_its_waiters_with_its_errno_and_keeps_what_landed() {
        let p = Policy::default();
        let f = Flow::new("e:1", &Ranges::default());
        let pieces = f.plan(&p, 0, 3 * MIB, 1 << 30, None);
        assert_eq!(pieces.len(), 3);
        f.landed(0, MIB / 2);
        assert_eq!(f.ended((0, MIB), Some(libc::EPERM)), [(0, MIB / 2)]);
        assert_eq!(f.check(0, 4096), Wait::Ready);
        assert_eq!(f.check(0, MIB), Wait::Failed(libc::EPERM));
        assert_eq!(f.check(MIB, 2 * MIB), Wait::Pending);
        // Asked again: the lost part is fetched again.
        assert_eq!(f.plan(&p, 0, MIB, 1 << 30, None), [(MIB / 2, MIB)]);
        assert_eq!(f.check(0, MIB), Wait::Pending);
    }

    #[tokio::test]
    async fn waiters_wake_when_bytes_land_or_fetches_fail() {
        let p = Policy::default();
        let f = std::sync::Arc::new(Flow::new("e:1", &Ranges::default()));
        f.plan(&p, 0, 2 * MIB, 1 << 30, None);
        let g = f.clone();
        let first = tokio::spawn(async move { g.wait(0, 4096).await });
        let g = f.clone();
        let second = tokio::spawn(async move { g.wait(MIB, 2 * MIB).await });
        tokio::task::yield_now().await;
        f.landed(0, 8192);
        assert_eq!(first.await.unwrap(), Ok(()));
        f.ended((MIB, 2 * MIB), Some(libc::EIO));
        assert_eq!(second.await.unwrap(), Err(libc::EIO));
        // Settled once nothing is in flight and what ended is recorded.
        f.landed(0, MIB);
        let g = f.clone();
        let settled = tokio::spawn(async move { g.settled().await });
        tokio::task::yield_now().await;
        assert!(
            !settled.is_finished(),
            "a piece whose bytes all landed is still in flight"
        );
        assert_eq!(f.ended((0, MIB), None), [(0, MIB)]);
        settled.abort();
        let g = f.clone();
        let settled = tokio::spawn(async move { g.settled().await });
        tokio::task::yield_now().await;
        assert!(!settled.is_finished());
        f.recorded();
        settled.await.unwrap();
    }

    #[test]
    fn present_is_the_complement_of_missing() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(present(&r, 0, 50), [(10, 20), (30, 40)]);
        assert_eq!(present(&r, 15, 35), [(15, 20), (30, 35)]);
        assert!(present(&r, 20, 30).is_empty());
    }
}
