//! Asynchronous writes (`rbd_aio_write`): the data path of the rbd driver keeps several large
//! writes in flight instead of waiting for each one.
//!
//! An [`AioWrite`] owns its buffer until librbd reports the write complete: librbd may read the
//! buffer at any time before that, so dropping an unfinished `AioWrite` waits for it. The
//! completion callback (run on a librbd thread) stores the result, releases the completion and
//! wakes the waiters; nothing else ever touches the completion handle.
use std::ffi::c_void;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::{API, Image, RbdError, check};

pub(super) type CompletionT = *mut c_void;
pub(super) type CallbackT = unsafe extern "C" fn(CompletionT, *mut c_void);

/// The outcome of one write: `None` while in flight, then librbd's return value.
#[derive(Debug, Default)]
struct State {
    result: Mutex<Option<i64>>,
    done: Condvar,
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
}

/// A write librbd is carrying out. Dropping it waits for it to finish.
#[derive(Debug)]
pub struct AioWrite {
    done: AioDone,
    offset: u64,
    len: usize,
    /// Read by librbd until the write completes; never touched here before then.
    _data: Vec<u8>,
    target: String,
}

/// Runs once per completion, on a librbd thread: records the result, releases the completion
/// and wakes whoever waits. Must not panic (it is called from C).
unsafe extern "C" fn on_complete(completion: CompletionT, arg: *mut c_void) {
    // SAFETY: `arg` is the `Arc::into_raw` that `aio_write` handed to this completion, and
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
    *state.result.lock() = Some(ret);
    state.done.notify_all();
}

impl Image {
    /// Starts writing `data` at `offset` and returns at once. librbd does not order writes that
    /// overlap while both are in flight, nor a read against an unfinished write: the caller
    /// waits for an earlier overlapping write first. `flush` covers every write that completed.
    pub fn aio_write(&self, offset: u64, data: Vec<u8>) -> Result<AioWrite, RbdError> {
        let api = self.api();
        let state = Arc::new(State::default());
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
        // SAFETY: the image is open; `data` stays alive and unmoved (its heap buffer does not
        // move with the Vec) until the completion reports, because the returned AioWrite owns
        // it and waits for the completion before dropping it; the completion is fresh.
        let ret = unsafe {
            (api.rbd_aio_write)(
                self.handle,
                offset,
                data.len(),
                data.as_ptr().cast(),
                completion,
            )
        };
        if let Err(e) = check(ret.into(), "rbd_aio_write", || self.target.clone()) {
            // Not submitted: librbd will not call back. Take the reference back and release.
            // SAFETY: as above, the callback will never run for this completion.
            unsafe {
                drop(Arc::from_raw(arg as *const State));
                (api.rbd_aio_release)(completion);
            }
            return Err(e);
        }
        Ok(AioWrite {
            done: AioDone(state),
            offset,
            len: data.len(),
            _data: data,
            target: self.target.clone(),
        })
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

    /// Waits for the write; says how it went and gives the buffer back.
    pub fn finish(mut self) -> (Result<(), RbdError>, Vec<u8>) {
        let ret = self.done.wait();
        let result = check(ret, "rbd_aio_write", || {
            format!("{} ({} bytes at {})", self.target, self.len, self.offset)
        })
        .map(drop);
        // librbd is done with the buffer: the completion reported.
        (result, std::mem::take(&mut self._data))
    }
}

impl Drop for AioWrite {
    fn drop(&mut self) {
        // The buffer must outlive librbd's use of it.
        self.done.wait();
    }
}
