//! An `LD_PRELOAD` shim for the User-Mode-Linux kernel (`linux.uml`) of netsim's kernel lane.
//!
//! Why it exists: UML saves and restores the FPU state of its guest processes with
//! `ptrace(PTRACE_GETREGSET / PTRACE_SETREGSET, NT_X86_XSTATE)`, in a buffer sized for the
//! XSAVE features it knows. The host kernel's `PTRACE_SETREGSET` insists on a buffer of the
//! host's whole XSAVE size and answers anything else with `EFAULT`. On CPUs with AMX the host's
//! size (about 11 KiB, with the tile data) is larger than UML 6.1's buffer, so the guest's
//! first process dies at boot ("ptrace set fp regs failed, errno = 14", then "Attempted to
//! kill init"). Debian ships no newer UML, so the kernel lane loads this shim into the guest
//! kernel's process.
//!
//! What it does: it passes every `ptrace` call through. Only a `PTRACE_SETREGSET` of
//! `NT_X86_XSTATE` that fails with `EFAULT` is retried: the tracee's current XSAVE area is read
//! whole, UML's shorter buffer is laid over its start (the legacy area, the XSAVE header with
//! its feature bitmap, and the components UML knows), and the whole area is written back. The
//! components past UML's buffer keep the tracee's own values; guest programs never use them
//! (AMX needs a permission request nobody in the guest makes).
//!
//! Why by hand: there is no crate for this; it is one function over `dlsym(RTLD_NEXT)`.

use std::cell::UnsafeCell;
use std::ffi::{c_int, c_long, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `NT_X86_XSTATE` from `<elf.h>`.
const NT_X86_XSTATE: usize = 0x202;
/// Larger than any XSAVE area an x86 CPU defines today (AMX brings it to about 11 KiB).
const AREA: usize = 64 * 1024;

type Ptrace = unsafe extern "C" fn(c_int, libc::pid_t, *mut c_void, *mut c_void) -> c_long;

/// The next `ptrace` in link order (libc's), found once.
static REAL: AtomicUsize = AtomicUsize::new(0);

#[repr(C, align(64))]
struct Area([u8; AREA]);

thread_local! {
    // Static TLS (const-initialised, no destructor): no allocation and no registration,
    // which matters inside UML, where the kernel's own code calls in.
    static SCRATCH: UnsafeCell<Area> = const { UnsafeCell::new(Area([0; AREA])) };
}

fn real() -> Option<Ptrace> {
    let mut f = REAL.load(Ordering::Relaxed);
    if f == 0 {
        // SAFETY: dlsym with a static NUL-terminated name.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"ptrace".as_ptr()) } as usize;
        REAL.store(f, Ordering::Relaxed);
    }
    // SAFETY: a non-null result of dlsym("ptrace") is libc's ptrace, whose first four
    // arguments are passed as this type says on x86-64 (the variadic tail is never read
    // beyond them).
    (f != 0).then(|| unsafe { std::mem::transmute::<usize, Ptrace>(f) })
}

/// `ptrace(2)`, as libc declares it (UML always passes the four arguments).
///
/// # Safety
/// As `ptrace(2)`: `addr` and `data` must be what the request expects.
#[no_mangle]
pub unsafe extern "C" fn ptrace(
    request: c_int,
    pid: libc::pid_t,
    addr: *mut c_void,
    data: *mut c_void,
) -> c_long {
    let Some(real) = real() else {
        // SAFETY: setting errno, as a failing libc call would.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
        return -1;
    };
    // SAFETY: the caller's arguments, passed through.
    let rc = unsafe { real(request, pid, addr, data) };
    if rc >= 0
        || request != libc::PTRACE_SETREGSET as c_int
        || addr as usize != NT_X86_XSTATE
        || data.is_null()
        // SAFETY: reading errno right after the failed call.
        || unsafe { *libc::__errno_location() } != libc::EFAULT
    {
        return rc;
    }
    // SAFETY: for PTRACE_SETREGSET `data` is the caller's iovec.
    let given = unsafe { &*(data as *const libc::iovec) };
    SCRATCH.with(|cell| {
        let area = cell.get();
        let mut whole = libc::iovec {
            iov_base: area.cast(),
            iov_len: AREA,
        };
        // SAFETY: `whole` describes the thread's own scratch area, AREA bytes long.
        let got = unsafe {
            real(
                libc::PTRACE_GETREGSET as c_int,
                pid,
                addr,
                (&mut whole as *mut libc::iovec).cast(),
            )
        };
        if got < 0 || whole.iov_len <= given.iov_len || given.iov_base.is_null() {
            // SAFETY: the original failure stands.
            unsafe { *libc::__errno_location() = libc::EFAULT };
            return rc;
        }
        // SAFETY: the caller's buffer holds iov_len bytes, the scratch area more than that.
        unsafe {
            std::ptr::copy_nonoverlapping(
                given.iov_base as *const u8,
                area.cast::<u8>(),
                given.iov_len,
            );
            real(request, pid, addr, (&mut whole as *mut libc::iovec).cast())
        }
    })
}
