//go:build !purego

#include "textflag.h"

// CONSTANTS sets X1 to 16 bytes of '"', X2 of '\\', X3 of 0x1f and X4 of
// zeros.
#define CONSTANTS \
	MOVOU quotes<>(SB), X1; \
	MOVOU backslashes<>(SB), X2; \
	MOVOU controls<>(SB), X3; \
	PXOR X4, X4

DATA quotes<>+0(SB)/8, $0x2222222222222222
DATA quotes<>+8(SB)/8, $0x2222222222222222
GLOBL quotes<>(SB), RODATA|NOPTR, $16
DATA backslashes<>+0(SB)/8, $0x5c5c5c5c5c5c5c5c
DATA backslashes<>+8(SB)/8, $0x5c5c5c5c5c5c5c5c
GLOBL backslashes<>(SB), RODATA|NOPTR, $16
DATA controls<>+0(SB)/8, $0x1f1f1f1f1f1f1f1f
DATA controls<>+8(SB)/8, $0x1f1f1f1f1f1f1f1f
GLOBL controls<>(SB), RODATA|NOPTR, $16

// SPECIAL(x, t1, t2) sets each byte of x to 0xff where it is '"', '\\' or
// below 0x20 (x -(saturating) 0x1f == 0), to 0 elsewhere.
#define SPECIAL(x, t1, t2) \
	MOVOU x, t1; \
	PCMPEQB X1, t1; \
	MOVOU x, t2; \
	PCMPEQB X2, t2; \
	POR t2, t1; \
	PSUBUSB X3, x; \
	PCMPEQB X4, x; \
	POR t1, x

// SPECIAL32(lo, hi) applies SPECIAL to the 16 bytes at lo, in X0, and to
// the 16 at hi, in X8 (X5, X6, X9 and X10 are overwritten); MASK32(dst,
// tmp) then sets dst to their 32 bits, X0's low.
#define SPECIAL32(lo, hi) \
	MOVOU lo, X0; \
	MOVOU hi, X8; \
	SPECIAL(X0, X5, X6); \
	SPECIAL(X8, X9, X10)

#define MASK32(dst, tmp) \
	PMOVMSKB X0, dst; \
	PMOVMSKB X8, tmp; \
	SHLQ $16, tmp; \
	ORQ  tmp, dst

// func specialIndex(p []byte) int
//
// SSE2, which every amd64 processor has: 32 bytes a step, then 16, then
// one at a time.
TEXT ·specialIndex(SB), NOSPLIT, $0-32
	MOVQ p_base+0(FP), SI
	MOVQ p_len+8(FP), BX
	XORQ AX, AX
	CONSTANTS

loop32:
	LEAQ 32(AX), DX
	CMPQ DX, BX
	JHI  step16
	SPECIAL32((SI)(AX*1), 16(SI)(AX*1))
	MOVOU X0, X11
	POR  X8, X11
	PMOVMSKB X11, DX
	TESTL DX, DX
	JNZ  found32
	ADDQ $32, AX
	JMP  loop32

found32:
	MASK32(DX, CX)
	BSFQ DX, DX
	ADDQ DX, AX
	MOVQ AX, ret+24(FP)
	RET

step16:
	LEAQ 16(AX), DX
	CMPQ DX, BX
	JHI  tail
	MOVOU (SI)(AX*1), X0
	SPECIAL(X0, X5, X6)
	PMOVMSKB X0, DX
	TESTL DX, DX
	JNZ  found16
	ADDQ $16, AX

tail:
	CMPQ AX, BX
	JAE  done
	MOVBLZX (SI)(AX*1), DX
	CMPB DL, $0x22
	JEQ  done
	CMPB DL, $0x5c
	JEQ  done
	CMPB DL, $0x20
	JCS  done
	INCQ AX
	JMP  tail

found16:
	BSFL DX, DX
	ADDQ DX, AX

done:
	MOVQ AX, ret+24(FP)
	RET

// func specialMask(p *[64]byte) uint64
TEXT ·specialMask(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), SI
	CONSTANTS
	SPECIAL32((SI), 16(SI))
	MASK32(AX, CX)
	SPECIAL32(32(SI), 48(SI))
	MASK32(DX, CX)
	SHLQ $32, DX
	ORQ  DX, AX
	MOVQ AX, ret+8(FP)
	RET
