//! A safe, sans-IO HTTP/2 client session over libnghttp2 (the library
//! behind curl and h2load), for Kickoff's `nghttp2` send engine.
//!
//! [`Session`] owns one `nghttp2_session` in client mode. It does no I/O:
//! the caller feeds it the bytes read from the connection
//! ([`Session::receive`]) and writes out what it produces
//! ([`Session::send`]). nghttp2 does the protocol: HPACK both ways, SETTINGS
//! (a lowered MAX_CONCURRENT_STREAMS queues requests inside the session),
//! flow control (WINDOW_UPDATE is sent as data is consumed), PING
//! acknowledgements, GOAWAY (streams above the last stream id are closed as
//! refused) and RST_STREAM.
//!
//! Each request carries a caller's `key` (an index into the caller's own
//! table of calls); a [`Handler`] hears about that key's response headers,
//! body chunks and close. No callback outlives the call that gave it the
//! handler, and no allocation is made per event.
//!
//! # Safety argument, once
//!
//! - The session pointer is created in [`Session::new`], never shared and
//!   freed once in `Drop`; every method takes `&mut self` or reads through
//!   `&self` a value the C side only reads.
//! - nghttp2 calls back into Rust only from inside `nghttp2_session_mem_recv2`
//!   and `nghttp2_session_mem_send2`, which only [`Session::receive`] and
//!   [`Session::send`] call. Those set [`Context::handler`] to a reference
//!   that lives on their stack for exactly that call and clear it before
//!   returning. Callbacks reach the context through `user_data`, a pointer to
//!   the boxed [`Context`] (its address never changes while the session
//!   lives).
//! - Callbacks never unwind into C: they do plain field updates and call the
//!   caller's handler, and a panic there aborts (`extern "C"` functions
//!   abort on unwind).

use std::ffi::{CStr, c_int, c_void};
use std::ptr::NonNull;

use bytes::Bytes;
use libnghttp2_sys as sys;

/// An error from nghttp2 (its negative library error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error(i32);

impl Error {
    /// The library error code (`nghttp2_error`).
    pub fn code(self) -> i32 {
        self.0
    }

    /// True when the session takes no new streams (a GOAWAY was received or
    /// sent, or stream ids ran out): open a new connection.
    pub fn is_closed(self) -> bool {
        matches!(self.0, sys::NGHTTP2_ERR_START_STREAM_NOT_ALLOWED | sys::NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: nghttp2_strerror accepts any int and returns a pointer to a
        // static NUL-terminated string.
        let text = unsafe { CStr::from_ptr(sys::nghttp2_strerror(self.0)) };
        write!(f, "nghttp2: {} ({})", text.to_string_lossy(), self.0)
    }
}

impl std::error::Error for Error {}

fn check(rv: c_int) -> Result<(), Error> {
    if rv < 0 { Err(Error(rv)) } else { Ok(()) }
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// The HTTP/2 error code (0 when it ended normally).
    pub error_code: u32,
    /// The peer reset the stream (RST_STREAM received), rather than the
    /// session closing it.
    pub reset_by_peer: bool,
}

impl Close {
    /// REFUSED_STREAM: the peer never processed the request (refused, or
    /// above a GOAWAY's last stream id); safe to send again.
    pub fn refused(&self) -> bool {
        self.error_code == sys::NGHTTP2_REFUSED_STREAM
    }
}

/// Hears what the session receives, by the caller's request key.
pub trait Handler {
    /// A response header field (`:status` included), in order.
    fn on_header(&mut self, key: usize, name: &[u8], value: &[u8]);
    /// A chunk of the response body.
    fn on_data(&mut self, key: usize, data: &[u8]);
    /// The request's HEADERS frame was serialised for the wire: from now on
    /// the peer may have seen it.
    fn on_sent(&mut self, key: usize);
    /// The stream is closed; no more events for `key`.
    fn on_close(&mut self, key: usize, close: Close);
    /// The peer sent GOAWAY.
    fn on_goaway(&mut self, _last_stream_id: i32, _error_code: u32) {}
}

/// A request header field.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// Lowercase name (pseudo-headers first).
    pub name: &'a [u8],
    /// Value.
    pub value: &'a [u8],
    /// Never indexed by HPACK (credentials, unique ids).
    pub sensitive: bool,
}

/// Session settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Streams assumed allowed until the peer's SETTINGS arrive (APNs
    /// allows one until its first accepted request).
    pub initial_max_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE offered for each response stream.
    pub stream_window: u32,
    /// Receive window of the whole connection.
    pub connection_window: i32,
}

impl Default for Options {
    fn default() -> Self {
        Self { initial_max_streams: 1, stream_window: 1 << 20, connection_window: 8 << 20 }
    }
}

/// What the callbacks reach through `user_data`.
struct Context {
    /// The caller's handler, set only while `receive` or `send` runs.
    handler: Option<NonNull<dyn Handler + 'static>>,
    /// Streams submitted and not yet closed, in slots: a stream's slot
    /// index (+ 1) is its nghttp2 stream user data and its body source, so
    /// no event looks anything up by stream id.
    streams: Vec<Option<Stream>>,
    /// Free slots.
    free: Vec<usize>,
    /// The stream of the RST_STREAM frame just received (its close follows
    /// within the same call).
    reset: i32,
    /// Reused header array for submissions.
    nva: Vec<sys::nghttp2_nv>,
}

/// A submitted stream: its caller's key and the part of its body not yet
/// handed to nghttp2.
struct Stream {
    key: usize,
    body: Bytes,
    at: usize,
}

impl Context {
    fn key(&self, slot: usize) -> Option<usize> {
        self.streams.get(slot)?.as_ref().map(|s| s.key)
    }

    fn release(&mut self, slot: usize) -> Option<Stream> {
        let stream = self.streams.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some(stream)
    }
}

/// One HTTP/2 client session (one connection's protocol state).
pub struct Session {
    raw: NonNull<sys::nghttp2_session>,
    ctx: ContextPtr,
}

/// The context, owned through a raw pointer rather than a `Box`: nghttp2
/// holds an alias of it as user data, so no `&mut Context` may outlive the
/// method that made it (a `Box` would assert unique access whenever moved
/// or borrowed).
struct ContextPtr(NonNull<Context>);

impl ContextPtr {
    fn new(ctx: Context) -> Self {
        Self(NonNull::from(Box::leak(Box::new(ctx))))
    }

    fn get(&mut self) -> &mut Context {
        // SAFETY: allocated in `new` and live until drop; the only other
        // user is nghttp2's user data, dereferenced only by callbacks while
        // `receive`/`send` run, and those methods hold no borrow of it
        // across the C call.
        unsafe { self.0.as_mut() }
    }

    fn get_ref(&self) -> &Context {
        // SAFETY: as in `get`, shared.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for ContextPtr {
    fn drop(&mut self) {
        // SAFETY: leaked from a Box in `new`, freed once here. A `Session`
        // deletes its nghttp2 session (the alias) in its own `Drop`, which
        // runs before its fields are dropped.
        unsafe { drop(Box::from_raw(self.0.as_ptr())) };
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ctx = self.ctx.get_ref();
        f.debug_struct("Session").field("streams", &(ctx.streams.len() - ctx.free.len())).finish_non_exhaustive()
    }
}

// SAFETY: an nghttp2 session has no thread affinity (no thread-locals, no
// locks); it is a plain heap structure used through `&mut self` only. The
// context (owned through a raw pointer, holding Bytes and Vecs, which are
// Send) holds no handler between calls. Moving it to another thread is
// sound; sharing it is not offered (Session is not Sync).
unsafe impl Send for Session {}

/// Turns a stream's user data back into its slot (stored as slot + 1, so
/// that "no data" stays null).
///
/// # Safety
/// `session` must be a live session pointer.
unsafe fn slot_of(session: *mut sys::nghttp2_session, stream_id: i32) -> Option<usize> {
    // SAFETY: the caller passes the live session it got in a callback.
    let data = unsafe { sys::nghttp2_session_get_stream_user_data(session, stream_id) };
    (data as usize).checked_sub(1)
}

/// Runs `f` with the context and handler of a callback, when a handler is
/// set.
///
/// # Safety
/// `user_data` must be the session's `Context` pointer, and no other
/// reference to that context may be live (nghttp2 runs callbacks one at a
/// time, from inside `receive`/`send`, which hold `&mut Session` and use no
/// reference to the context across the C call).
unsafe fn with_handler(user_data: *mut c_void, f: impl FnOnce(&mut Context, &mut dyn Handler)) -> c_int {
    // SAFETY: per the contract above, user_data is our exclusive Context.
    let ctx = unsafe { &mut *user_data.cast::<Context>() };
    if let Some(mut handler) = ctx.handler {
        // SAFETY: set by receive/send from a `&mut dyn Handler` that
        // outlives the C call this callback runs in; nothing else
        // dereferences it meanwhile.
        let handler = unsafe { handler.as_mut() };
        f(ctx, handler);
    }
    0
}

unsafe extern "C" fn on_header(
    session: *mut sys::nghttp2_session,
    frame: *const sys::nghttp2_frame,
    name: *const u8,
    namelen: usize,
    value: *const u8,
    valuelen: usize,
    _flags: u8,
    user_data: *mut c_void,
) -> c_int {
    // SAFETY: frame points to the frame being received; every variant of the
    // union starts with its header.
    let stream_id = unsafe { (*frame).hd.stream_id };
    // SAFETY: session is the live session calling us.
    let Some(slot) = (unsafe { slot_of(session, stream_id) }) else { return 0 };
    // SAFETY: nghttp2 passes name and value buffers of the given lengths,
    // valid for this callback.
    let (name, value) = unsafe { (std::slice::from_raw_parts(name, namelen), std::slice::from_raw_parts(value, valuelen)) };
    // SAFETY: user_data is our Context, per with_handler's contract.
    unsafe {
        with_handler(user_data, |ctx, h| {
            if let Some(key) = ctx.key(slot) {
                h.on_header(key, name, value);
            }
        })
    }
}

unsafe extern "C" fn on_data_chunk(
    session: *mut sys::nghttp2_session,
    _flags: u8,
    stream_id: i32,
    data: *const u8,
    len: usize,
    user_data: *mut c_void,
) -> c_int {
    // SAFETY: session is the live session calling us.
    let Some(slot) = (unsafe { slot_of(session, stream_id) }) else { return 0 };
    // SAFETY: nghttp2 passes `len` readable bytes at `data` for this call.
    let data = unsafe { std::slice::from_raw_parts(data, len) };
    // SAFETY: user_data is our Context, per with_handler's contract.
    unsafe {
        with_handler(user_data, |ctx, h| {
            if let Some(key) = ctx.key(slot) {
                h.on_data(key, data);
            }
        })
    }
}

unsafe extern "C" fn on_frame_recv(_session: *mut sys::nghttp2_session, frame: *const sys::nghttp2_frame, user_data: *mut c_void) -> c_int {
    // SAFETY: frame points to the received frame; the header is common to
    // every variant.
    let hd = unsafe { (*frame).hd };
    match u32::from(hd.type_) {
        sys::NGHTTP2_RST_STREAM => {
            // SAFETY: user_data is our exclusive Context (see with_handler).
            unsafe { (*user_data.cast::<Context>()).reset = hd.stream_id };
            0
        }
        sys::NGHTTP2_GOAWAY => {
            // SAFETY: the frame type says the union holds a GOAWAY.
            let (last, code) = unsafe { ((*frame).goaway.last_stream_id, (*frame).goaway.error_code) };
            // SAFETY: user_data is our Context, per with_handler's contract.
            unsafe { with_handler(user_data, |_, h| h.on_goaway(last, code)) }
        }
        _ => 0,
    }
}

unsafe extern "C" fn on_frame_send(session: *mut sys::nghttp2_session, frame: *const sys::nghttp2_frame, user_data: *mut c_void) -> c_int {
    // SAFETY: frame points to the frame just serialised.
    let hd = unsafe { (*frame).hd };
    if u32::from(hd.type_) != sys::NGHTTP2_HEADERS {
        return 0;
    }
    // SAFETY: session is the live session calling us.
    let Some(slot) = (unsafe { slot_of(session, hd.stream_id) }) else { return 0 };
    // SAFETY: user_data is our Context, per with_handler's contract.
    unsafe {
        with_handler(user_data, |ctx, h| {
            if let Some(key) = ctx.key(slot) {
                h.on_sent(key);
            }
        })
    }
}

unsafe extern "C" fn on_stream_close(session: *mut sys::nghttp2_session, stream_id: i32, error_code: u32, user_data: *mut c_void) -> c_int {
    // SAFETY: session is the live session calling us (the stream and its
    // user data exist until this callback returns).
    let slot = unsafe { slot_of(session, stream_id) };
    // SAFETY: user_data is our Context, per with_handler's contract.
    unsafe {
        with_handler(user_data, |ctx, h| {
            let reset_by_peer = std::mem::take(&mut ctx.reset) == stream_id;
            if let Some(stream) = slot.and_then(|slot| ctx.release(slot)) {
                h.on_close(stream.key, Close { error_code, reset_by_peer });
            }
        })
    }
}

/// Copies the next piece of a request body into nghttp2's DATA buffer.
unsafe extern "C" fn read_body(
    _session: *mut sys::nghttp2_session,
    _stream_id: i32,
    buf: *mut u8,
    length: usize,
    data_flags: *mut u32,
    source: *mut sys::nghttp2_data_source,
    user_data: *mut c_void,
) -> sys::nghttp2_ssize {
    // SAFETY: user_data is our exclusive Context (see with_handler); the
    // read callback runs inside `send`, like the others.
    let ctx = unsafe { &mut *user_data.cast::<Context>() };
    // SAFETY: nghttp2 passes the source given at submission, whose `ptr`
    // field holds the stream's slot index (an integer, never dereferenced).
    let slot = unsafe { (*source).ptr } as usize;
    let Some(Some(Stream { body, at, .. })) = ctx.streams.get_mut(slot) else {
        // Every open stream is registered.
        return sys::NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE as sys::nghttp2_ssize;
    };
    let n = (body.len() - *at).min(length);
    // SAFETY: nghttp2 gives a writable buffer of `length` bytes; n <= length
    // and the source range is within `body`; the two cannot overlap (the
    // body is our Bytes, the buffer nghttp2's).
    unsafe { std::ptr::copy_nonoverlapping(body.as_ptr().add(*at), buf, n) };
    *at += n;
    if *at == body.len() {
        *body = Bytes::new();
        // SAFETY: nghttp2 passes a valid flags pointer.
        unsafe { *data_flags |= sys::NGHTTP2_DATA_FLAG_EOF };
    }
    n as sys::nghttp2_ssize
}

impl Session {
    /// A client session; its connection preface and SETTINGS are ready for
    /// the first [`send`](Self::send).
    pub fn new(options: &Options) -> Result<Self, Error> {
        let ctx = ContextPtr::new(Context { handler: None, streams: Vec::new(), free: Vec::new(), reset: 0, nva: Vec::with_capacity(16) });
        let mut callbacks = std::ptr::null_mut();
        // SAFETY: out-pointer to a local; checked below.
        check(unsafe { sys::nghttp2_session_callbacks_new(&mut callbacks) })?;
        // SAFETY: callbacks was just allocated; each setter stores a function
        // pointer whose signature matches the typedef (checked by the types).
        unsafe {
            sys::nghttp2_session_callbacks_set_on_header_callback(callbacks, Some(on_header));
            sys::nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, Some(on_data_chunk));
            sys::nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, Some(on_frame_recv));
            sys::nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, Some(on_frame_send));
            sys::nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, Some(on_stream_close));
        }
        let mut option = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        let rv = unsafe { sys::nghttp2_option_new(&mut option) };
        if rv < 0 {
            // SAFETY: callbacks is ours and no longer needed.
            unsafe { sys::nghttp2_session_callbacks_del(callbacks) };
            return Err(Error(rv));
        }
        // SAFETY: option was just allocated.
        unsafe { sys::nghttp2_option_set_peer_max_concurrent_streams(option, options.initial_max_streams) };
        let mut raw = std::ptr::null_mut();
        let user_data: *mut Context = ctx.0.as_ptr();
        // SAFETY: callbacks and option are valid; nghttp2 copies both, so we
        // free them right after. user_data is the context's heap address,
        // stable until the session is deleted.
        let rv = unsafe { sys::nghttp2_session_client_new2(&mut raw, callbacks, user_data.cast(), option) };
        // SAFETY: both were allocated above and are not used again.
        unsafe {
            sys::nghttp2_session_callbacks_del(callbacks);
            sys::nghttp2_option_del(option);
        }
        check(rv)?;
        let raw = NonNull::new(raw).ok_or(Error(sys::NGHTTP2_ERR_NOMEM))?;
        let session = Self { raw, ctx };
        let settings = [
            sys::nghttp2_settings_entry { settings_id: sys::NGHTTP2_SETTINGS_ENABLE_PUSH as i32, value: 0 },
            sys::nghttp2_settings_entry { settings_id: sys::NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE as i32, value: options.stream_window },
        ];
        // SAFETY: the session is live; the array outlives the call (copied).
        check(unsafe { sys::nghttp2_submit_settings(session.raw.as_ptr(), 0, settings.as_ptr(), settings.len()) })?;
        // SAFETY: the session is live; stream 0 is the connection.
        check(unsafe { sys::nghttp2_session_set_local_window_size(session.raw.as_ptr(), 0, 0, options.connection_window) })?;
        Ok(session)
    }

    /// Queues a request; returns its stream id. `key` comes back in every
    /// [`Handler`] event of the stream. With a body, the request ends with
    /// it (one DATA frame when it fits the peer's frame size and window).
    /// Beyond the peer's stream limit the request waits inside the session.
    pub fn submit(&mut self, headers: &[Header<'_>], body: Option<Bytes>, key: usize) -> Result<i32, Error> {
        if !self.accepts_requests() {
            return Err(Error(sys::NGHTTP2_ERR_START_STREAM_NOT_ALLOWED));
        }
        let ctx = self.ctx.get();
        let slot = ctx.free.pop().unwrap_or_else(|| {
            ctx.streams.push(None);
            ctx.streams.len() - 1
        });
        let nva = &mut ctx.nva;
        nva.clear();
        nva.extend(headers.iter().map(|h| sys::nghttp2_nv {
            // nghttp2 copies names and values (no NO_COPY flags) and only
            // reads them: the casts to *mut never lead to a write.
            name: h.name.as_ptr().cast_mut(),
            value: h.value.as_ptr().cast_mut(),
            namelen: h.name.len(),
            valuelen: h.value.len(),
            flags: if h.sensitive { sys::NGHTTP2_NV_FLAG_NO_INDEX as u8 } else { sys::NGHTTP2_NV_FLAG_NONE as u8 },
        }));
        let provider =
            sys::nghttp2_data_provider2 { source: sys::nghttp2_data_source { ptr: slot as *mut c_void }, read_callback: Some(read_body) };
        let with_body = body.as_ref().is_some_and(|b| !b.is_empty());
        let prd: *const sys::nghttp2_data_provider2 = if with_body { &provider } else { std::ptr::null() };
        // SAFETY: the session is live; nva's entries point into `headers`,
        // which outlive the call, and nghttp2 copies them before returning;
        // the provider struct is copied too. The user data and the source
        // are plain integers (the slot), never dereferenced.
        let stream_id = unsafe {
            sys::nghttp2_submit_request2(self.raw.as_ptr(), std::ptr::null(), nva.as_ptr(), nva.len(), prd, (slot + 1) as *mut c_void)
        };
        if stream_id < 0 {
            self.ctx.get().free.push(slot);
            return Err(Error(stream_id));
        }
        self.ctx.get().streams[slot] = Some(Stream { key, body: body.unwrap_or_default(), at: 0 });
        Ok(stream_id)
    }

    /// Processes bytes read from the connection, calling `handler` for each
    /// event. An error is fatal to the session (nghttp2 has queued a GOAWAY
    /// where one is due: [`send`](Self::send) it, then close).
    pub fn receive(&mut self, input: &[u8], handler: &mut dyn Handler) -> Result<(), Error> {
        self.with(handler, |raw| {
            let mut at = 0;
            while at < input.len() {
                // SAFETY: the session is live; input[at..] is readable for
                // its length, for the whole call.
                let n = unsafe { sys::nghttp2_session_mem_recv2(raw, input[at..].as_ptr(), input.len() - at) };
                if n < 0 {
                    return Err(Error(n as i32));
                }
                at += n as usize;
            }
            Ok(())
        })
    }

    /// Appends what the session has to send to `out`, until it has nothing
    /// more or `out` holds at least `limit` bytes.
    pub fn send(&mut self, out: &mut Vec<u8>, limit: usize, handler: &mut dyn Handler) -> Result<(), Error> {
        self.with(handler, |raw| {
            while out.len() < limit {
                let mut data = std::ptr::null();
                // SAFETY: the session is live; data is an out-pointer.
                let n = unsafe { sys::nghttp2_session_mem_send2(raw, &mut data) };
                if n < 0 {
                    return Err(Error(n as i32));
                }
                if n == 0 {
                    break;
                }
                // SAFETY: nghttp2 returned `n` readable bytes at `data`,
                // valid until the next mem_send2 call; copied right away.
                out.extend_from_slice(unsafe { std::slice::from_raw_parts(data, n as usize) });
            }
            Ok(())
        })
    }

    fn with<T>(&mut self, handler: &mut dyn Handler, f: impl FnOnce(*mut sys::nghttp2_session) -> T) -> T {
        let handler: NonNull<dyn Handler + '_> = NonNull::from(handler);
        // SAFETY: erases the handler's lifetime for storage in the context;
        // it is cleared below before `handler`'s borrow ends, and only the
        // callbacks of the C call inside `f` dereference it.
        let handler: NonNull<dyn Handler + 'static> = unsafe { std::mem::transmute(handler) };
        self.ctx.get().handler = Some(handler);
        let out = f(self.raw.as_ptr());
        self.ctx.get().handler = None;
        out
    }

    /// True while the session wants to read or write: false once it is
    /// finished (a GOAWAY exchanged and its streams done, or a fatal error).
    pub fn is_alive(&self) -> bool {
        // SAFETY: the session is live; both functions only read it.
        unsafe { sys::nghttp2_session_want_read(self.raw.as_ptr()) != 0 || sys::nghttp2_session_want_write(self.raw.as_ptr()) != 0 }
    }

    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS (the initial assumption
    /// until its SETTINGS arrive; u32::MAX when it sets no limit).
    pub fn max_concurrent_streams(&self) -> u32 {
        // SAFETY: the session is live; the function only reads it.
        unsafe { sys::nghttp2_session_get_remote_settings(self.raw.as_ptr(), sys::NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) }
    }

    /// Whether a new request may start now (false after a GOAWAY).
    pub fn accepts_requests(&self) -> bool {
        // SAFETY: the session is live; the function only reads it.
        unsafe { sys::nghttp2_session_check_request_allowed(self.raw.as_ptr()) != 0 }
    }

    /// Queues a GOAWAY (NO_ERROR); the session ends once it is sent.
    pub fn terminate(&mut self) {
        // SAFETY: the session is live. Failure means it is already ending.
        let _ = unsafe { sys::nghttp2_session_terminate_session(self.raw.as_ptr(), sys::NGHTTP2_NO_ERROR) };
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: created in `new`, freed exactly once here; no callback can
        // run after this (nghttp2_session_del calls none).
        unsafe { sys::nghttp2_session_del(self.raw.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log(Vec<String>);

    impl Handler for Log {
        fn on_header(&mut self, key: usize, name: &[u8], value: &[u8]) {
            self.0.push(format!("{key} {}: {}", String::from_utf8_lossy(name), String::from_utf8_lossy(value)));
        }
        fn on_data(&mut self, key: usize, data: &[u8]) {
            self.0.push(format!("{key} data {}", String::from_utf8_lossy(data)));
        }
        fn on_sent(&mut self, key: usize) {
            self.0.push(format!("{key} sent"));
        }
        fn on_close(&mut self, key: usize, close: Close) {
            self.0.push(format!("{key} close {} {}", close.error_code, close.reset_by_peer));
        }
    }

    fn request(session: &mut Session, key: usize, body: &'static [u8]) -> i32 {
        let headers = [
            Header { name: b":method", value: b"POST", sensitive: false },
            Header { name: b":scheme", value: b"https", sensitive: false },
            Header { name: b":authority", value: b"example.test", sensitive: false },
            Header { name: b":path", value: b"/3/device/abc", sensitive: false },
            Header { name: b"authorization", value: b"bearer x", sensitive: true },
        ];
        session.submit(&headers, Some(Bytes::from_static(body)), key).unwrap()
    }

    #[test]
    fn the_preface_and_a_request_go_out_and_the_stream_limit_holds_the_second() {
        let mut s = Session::new(&Options::default()).unwrap();
        assert_eq!(s.max_concurrent_streams(), 1);
        assert_eq!(request(&mut s, 7, b"{\"aps\":{}}"), 1);
        assert_eq!(request(&mut s, 8, b"{}"), 3);
        let (mut out, mut log) = (Vec::new(), Log::default());
        s.send(&mut out, usize::MAX, &mut log).unwrap();
        assert!(out.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(out.windows(10).any(|w| w == b"{\"aps\":{}}"), "the body is sent");
        // One stream until the server's SETTINGS raise the limit.
        assert_eq!(log.0, ["7 sent"]);
    }

    #[test]
    fn a_server_settings_frame_raises_the_limit_and_a_goaway_refuses_new_streams() {
        let mut s = Session::new(&Options::default()).unwrap();
        let (mut out, mut log) = (Vec::new(), Log::default());
        s.send(&mut out, usize::MAX, &mut log).unwrap();
        // SETTINGS: MAX_CONCURRENT_STREAMS = 50.
        s.receive(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 50], &mut log).unwrap();
        assert_eq!(s.max_concurrent_streams(), 50);
        // GOAWAY, last stream 0, NO_ERROR.
        s.receive(&[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &mut log).unwrap();
        assert!(!s.accepts_requests());
        let headers = [Header { name: b":method", value: b"GET", sensitive: false }];
        assert!(s.submit(&headers, None, 1).unwrap_err().is_closed());
    }
}
