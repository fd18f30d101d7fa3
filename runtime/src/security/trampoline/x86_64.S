# The exec trampoline's code (x86_64), as bytes in exec_trampoline.rs; a unit
# test assembles this file and checks that the two still agree.
#
# argv = [path, message, args...]: execve(path, args, envp). If that fails, write
# message, then the errno in decimal and a newline, to fd 2, and exit 127 (what
# the runtime's init does for a failed execve). Position-independent, no data,
# no stack beyond the kernel's.
    .text
    .globl _start
_start:
    mov    (%rsp), %rcx           # argc
    cmp    $2, %rcx
    jb     out
    mov    8(%rsp), %rdi          # path = argv[0]
    lea    24(%rsp), %rsi         # args = &argv[2]
    lea    16(%rsp,%rcx,8), %rdx  # envp = &argv[argc+1]
    mov    $59, %eax              # execve
    syscall
    mov    %rax, %r12             # -errno
    mov    16(%rsp), %rsi         # message = argv[1]
    xor    %edx, %edx
1:  cmpb   $0, (%rsi,%rdx)        # strlen
    je     2f
    inc    %rdx
    jmp    1b
2:  mov    $2, %edi
    mov    $1, %eax               # write(2, message, len)
    syscall
    sub    $32, %rsp              # the errno's digits, right to left, then "\n"
    lea    31(%rsp), %rsi
    movb   $10, (%rsi)
    mov    %r12, %rax
    neg    %rax
    mov    $10, %ecx
3:  xor    %edx, %edx
    div    %rcx
    add    $48, %dl
    dec    %rsi
    mov    %dl, (%rsi)
    test   %rax, %rax
    jnz    3b
    lea    32(%rsp), %rdx
    sub    %rsi, %rdx
    mov    $2, %edi
    mov    $1, %eax               # write(2, digits, len)
    syscall
out:
    mov    $127, %edi
    mov    $231, %eax             # exit_group(127)
    syscall
