//! Asynchronous calls: writes (`rbd_aio_write`), so that the data path of the rbd driver keeps
//! several large writes in flight instead of waiting for each one, and reads (`rbd_aio_read`)
//! that a caller may stop waiting for (`Image::read_within`).
//!
//! An [`AioWrite`] owns its buffer until librbd reports the write complete: librbd may read the
//! buffer at any time before that, so dropping an unfinished `AioWrite` waits for it. Where the
//! image makes librbd copy a write's bytes before `rbd_aio_write` returns (fvol sets
//! `rbd_disable_zero_copy_writes`, and each image is checked at open for an override),
//! `aio_write_copied` hands librbd the caller's bytes and keeps no buffer. A read
//! reads into memory of its own, which lives until the read completes, whether or not anyone
//! still waits for it. The completion callback (run on a librbd thread) stores the result,
//! releases the completion and wakes the waiters; nothing else ever touches the completion
//! handle.
use std::ffi::c_void;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::activity::Activity;
use super::{API, Image, RbdError, check};

/// Bytes of reads in flight at most for `Image::read_within` (those given up on included).
const MAX_READS_WAITING: usize = 64 << 20;

pub(super) type CompletionT = *mut c_void;
pub(super) type CallbackT = unsafe extern "C" fn(CompletionT, *mut c_void);

/// The outcome of one call: `None` while in flight, then librbd's return value.
#[derive(Debug)]
struct State {
    result: Mutex<Option<i64>>,
    done: Condvar,
    /// The image's calls in flight, this one among them until it completes.
    activity: Arc<Activity>,
    call: &'static str,
    /// What a read reads into (empty for a write).
    buffer: ReadBuffer,
    read_len: usize,
}

/// Memory librbd writes a read into, freed with the `State` (after the completion, since the
/// callback holds a reference until it has run).
#[derive(Debug)]
struct ReadBuffer(*mut [u8]);

// SAFETY: the buffer is a plain heap allocation owned by the State; librbd writes it only
// before the completion fires, and Rust reads it only after (see `read_within`), so moving the
// owner between threads or sharing it is sound.
unsafe impl Send for ReadBuffer {}
// SAFETY: as for Send: no two threads ever access the bytes at the same time.
unsafe impl Sync for ReadBuffer {}

impl ReadBuffer {
    fn new(len: usize) -> ReadBuffer {
        ReadBuffer(Box::into_raw(vec![0u8; len].into_boxed_slice()))
    }
}

impl Drop for ReadBuffer {
    fn drop(&mut self) {
        // SAFETY: the pointer came from Box::into_raw in `new` and is freed once, here.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

impl State {
    fn new(activity: &Arc<Activity>, call: &'static str, read_len: usize) -> State {
        State {
            result: Mutex::new(None),
            done: Condvar::new(),
            activity: activity.clone(),
            call,
            buffer: ReadBuffer::new(read_len),
            read_len,
        }
    }
}

/// Waits for one write (a cheap handle: waiting needs no access to the `AioWrite` itself).
#[derive(Clone, Debug)]
pub struct AioDone(Arc<State>);

impl AioDone {
    pub fn is_done(&self) -> bool {
        self.0.result.lock().is_some()
    }

    /// Blocks until the write completed; its return value (negative errno on failure).
    pub fn wait(&self) -> i64 {
        let mut result = self.0.result.lock();
        loop {
            if let Some(r) = *result {
                return r;
            }
            self.0.done.wait(&mut result);
        }
    }

    /// As `wait`, but until `deadline` at most (`None` if the call is still in flight then;
    /// no deadline waits as long as it takes).
    pub fn wait_until(&self, deadline: Option<Instant>) -> Option<i64> {
        let Some(deadline) = deadline else {
            return Some(self.wait());
        };
        let mut result = self.0.result.lock();
        loop {
            if let Some(r) = *result {
                return Some(r);
            }
            if self.0.done.wait_until(&mut result, deadline).timed_out() {
                return *result;
            }
        }
    }
}

/// A write librbd is carrying out. Dropping it waits for it to finish.
#[derive(Debug)]
pub struct AioWrite {
    done: AioDone,
    offset: u64,
    len: usize,
    /// Read by librbd until the write completes; never touched here before then (empty when
    /// librbd copied the bytes, `aio_write_copied`).
    _data: Vec<u8>,
    target: String,
}

/// Runs once per completion, on a librbd thread: records the result, releases the completion
/// and wakes whoever waits. Must not panic (it is called from C).
unsafe extern "C" fn on_complete(completion: CompletionT, arg: *mut c_void) {
    // SAFETY: `arg` is the `Arc::into_raw` that `submit` handed to this completion, and
    // librbd calls the callback exactly once, so the reference is taken back exactly once.
    let state = unsafe { Arc::from_raw(arg as *const State) };
    let ret = match API.get() {
        // SAFETY: the completion is live until released below; librbd holds its own reference
        // while the callback runs, so releasing ours here is allowed (as `rbd bench` does).
        Some(api) => unsafe {
            let ret = (api.rbd_aio_get_return_value)(completion) as i64;
            (api.rbd_aio_release)(completion);
            ret
        },
        // Unreachable: a completion exists only once the libraries are loaded.
        None => -(libc::EIO as i64),
    };
    state.activity.end(state.call, ret);
    state.activity.release_read(state.read_len);
    *state.result.lock() = Some(ret);
    state.done.notify_all();
}

impl Image {
    /// Starts writing `data` at `offset` and returns at once. librbd does not order writes that
    /// overlap while both are in flight, nor a read against an unfinished write: the caller
    /// waits for an earlier overlapping write first. `flush` covers every write that completed.
    pub fn aio_write(&self, offset: u64, data: Vec<u8>) -> Result<AioWrite, RbdError> {
        let bytes: *const [u8] = data.as_slice();
        // SAFETY: `data` stays alive and unmoved (its heap buffer does not move with the Vec)
        // until the completion reports, because the returned AioWrite owns it and waits for the
        // completion before dropping it.
        unsafe { self.start_write(offset, bytes, data) }
    }

    /// `aio_write` of bytes the caller keeps: librbd copies them before returning where the
    /// image says it does (`copies_writes`), else they are copied here into a buffer the write
    /// owns.
    pub fn aio_write_copied(&self, offset: u64, data: &[u8]) -> Result<AioWrite, RbdError> {
        if !self.copies_writes() {
            return self.aio_write(offset, data.to_vec());
        }
        // SAFETY: `data` is valid for the call; with `rbd_disable_zero_copy_writes` in effect
        // for this image (checked at open), librbd copies it into a buffer of its own before
        // rbd_aio_write returns, and never reads the caller's memory afterwards.
        unsafe { self.start_write(offset, data, Vec::new()) }
    }

    /// Starts `rbd_aio_write` of `bytes`; the write keeps `owned` until it completes.
    ///
    /// # Safety
    /// `bytes` must stay valid and unchanged for as long as librbd may read them: until the
    /// completion (memory that `owned` holds), or until rbd_aio_write returns (where librbd
    /// copies them).
    unsafe fn start_write(
        &self,
        offset: u64,
        bytes: *const [u8],
        owned: Vec<u8>,
    ) -> Result<AioWrite, RbdError> {
        let state = Arc::new(State::new(&self.activity, "rbd_aio_write", 0));
        let (ptr, len) = (bytes.cast::<u8>(), bytes.len());
        // SAFETY: the caller keeps `bytes` readable for as long as librbd reads them.
        unsafe {
            self.submit(&state, |api, handle, completion| {
                (api.rbd_aio_write)(handle, offset, len, ptr.cast(), completion)
            })?
        };
        Ok(AioWrite {
            done: AioDone(state),
            offset,
            len,
            _data: owned,
            target: self.target.clone(),
        })
    }

    /// Fills `out` from `offset`, waiting `limit` at most: then it fails with ETIMEDOUT and the
    /// read goes on in the background, into memory of its own, until the cluster answers.
    pub fn read_within(
        &self,
        offset: u64,
        out: &mut [u8],
        limit: Duration,
    ) -> Result<(), RbdError> {
        let len = out.len();
        if len == 0 {
            return Ok(());
        }
        // Reads given up on keep their memory until the cluster answers: bounded, so that a
        // reader retrying through a long outage cannot make it grow without end.
        if !self.activity.reserve_read(len, MAX_READS_WAITING) {
            return Err(self.fail(
                "rbd_aio_read (64 MiB of reads wait for the cluster already)",
                libc::ETIMEDOUT,
            ));
        }
        let state = Arc::new(State::new(&self.activity, "rbd_aio_read", len));
        let buf = state.buffer.0 as *mut u8;
        // SAFETY: the buffer holds `len` bytes and lives as long as the State, which the
        // callback holds until the read completed; nothing reads it before that.
        let submitted = unsafe {
            self.submit(&state, |api, handle, completion| {
                (api.rbd_aio_read)(handle, offset, len, buf.cast(), completion)
            })
        };
        if let Err(e) = submitted {
            self.activity.release_read(len);
            return Err(e);
        }
        let done = AioDone(state);
        let Some(ret) = done.wait_until(Some(Instant::now() + limit)) else {
            return Err(self.fail_timed_out("rbd_aio_read", limit));
        };
        let n = check(ret, "rbd_aio_read", || self.target.clone())? as usize;
        if n != len {
            return Err(self.fail("rbd_aio_read (past the image's end)", libc::EINVAL));
        }
        // SAFETY: the read completed (its result is set, under the lock the callback stored it
        // with), so librbd no longer writes the buffer; it holds `len` initialized bytes.
        out.copy_from_slice(unsafe { std::slice::from_raw_parts(buf, len) });
        Ok(())
    }

    fn fail_timed_out(&self, call: &'static str, limit: Duration) -> RbdError {
        RbdError::Call {
            op: call,
            target: format!(
                "{} (the cluster did not answer within {}s; the call goes on in the background)",
                self.target,
                limit.as_secs()
            ),
            errno: libc::ETIMEDOUT,
        }
    }

    /// Makes a completion for `state` and starts the call `start` makes with it. On success the
    /// callback will run exactly once; on failure it never runs and nothing is left behind.
    ///
    /// # Safety
    /// `start` must start one asynchronous call on the image with the completion, and whatever
    /// memory it hands librbd must stay valid until the completion fires.
    unsafe fn submit(
        &self,
        state: &Arc<State>,
        start: impl FnOnce(&super::Api, super::ImageT, CompletionT) -> std::ffi::c_int,
    ) -> Result<(), RbdError> {
        let api = self.api();
        let arg = Arc::into_raw(state.clone()) as *mut c_void;
        let mut completion: CompletionT = std::ptr::null_mut();
        // SAFETY: `on_complete` matches rbd_callback_t; `arg` stays valid until the callback
        // takes it back; `completion` is a valid out-pointer.
        let ret = unsafe { (api.rbd_aio_create_completion)(arg, on_complete, &mut completion) };
        if let Err(e) = check(ret.into(), "rbd_aio_create_completion", || {
            self.target.clone()
        }) {
            // SAFETY: no completion was made, so nothing else will take the reference back.
            drop(unsafe { Arc::from_raw(arg as *const State) });
            return Err(e);
        }
        self.activity.begin();
        let ret = start(api, self.handle, completion);
        if let Err(e) = check(ret.into(), state.call, || self.target.clone()) {
            self.activity.end(state.call, ret.into());
            // Not submitted: librbd will not call back. Take the reference back and release.
            // SAFETY: as above, the callback will never run for this completion.
            unsafe {
                drop(Arc::from_raw(arg as *const State));
                (api.rbd_aio_release)(completion);
            }
            return Err(e);
        }
        Ok(())
    }
}

impl AioWrite {
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn done(&self) -> &AioDone {
        &self.done
    }

    /// Waits for the write; says how it went.
    pub fn finish(self) -> Result<(), RbdError> {
        let ret = self.done.wait();
        check(ret, "rbd_aio_write", || {
            format!("{} ({} bytes at {})", self.target, self.len, self.offset)
        })
        .map(drop)
    }
}

impl Drop for AioWrite {
    fn drop(&mut self) {
        // The buffer must outlive librbd's use of it.
        self.done.wait();
    }
}
