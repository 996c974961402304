//! The process allocator: mimalloc, told to keep freed memory instead of returning it to the
//! OS (why, and the measurements: [`tunekit_kernels::alloc`], which holds the option setter).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use tunekit_kernels::alloc::keep_freed_memory;
