"""cffi (API mode) build of oorkiller._kernel: the kernel calls Python lacks.

- mlockall / munlockall, with the MCL_* flags, so the daemon is never paged out.
- madvise(MADV_DONTNEED), to give back the library pages start-up touched
  before they are locked.
- process_mrelease(pidfd, flags): Linux 5.15+ syscall 448, which frees a
  SIGKILLed process's memory at once instead of when its last thread exits.
  Where the C library or kernel lacks it, it returns -1 with errno ENOSYS.

Errors come back C style: -1 and `ffi.errno`. oorkiller/kernel.py wraps them.
"""
from cffi import FFI

ffibuilder = FFI()

ffibuilder.cdef("""
    #define MCL_CURRENT ...
    #define MCL_FUTURE ...
    #define MCL_ONFAULT ...
    int mlockall(int flags);
    int munlockall(void);
    #define MADV_DONTNEED ...
    int madvise(void *addr, size_t length, int advice);
    int process_mrelease(int pidfd, unsigned int flags);
""")

ffibuilder.set_source("oorkiller._kernel", r"""
    #include <errno.h>
    #include <sys/mman.h>
    #include <sys/syscall.h>
    #include <unistd.h>

    #ifndef MCL_ONFAULT
    #define MCL_ONFAULT 4
    #endif
    #ifndef __NR_process_mrelease
    #define __NR_process_mrelease 448  /* the same number on every architecture */
    #endif

    /* The raw syscall, not glibc's wrapper (2.36+ only); renamed so it does
     * not clash with glibc's declaration where there is one. */
    static int oorkiller_process_mrelease(int pidfd, unsigned int flags)
    {
        return (int)syscall(__NR_process_mrelease, pidfd, flags);
    }
    #define process_mrelease oorkiller_process_mrelease
""")

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
