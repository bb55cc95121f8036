// SPDX-License-Identifier: Apache-2.0
/*
 * COM1 console (polled 16550), a small printf and the string helpers the
 * compiler may call implicitly.
 */
#include "kernel.h"

#define COM1 0x3f8
#define UART_RBR 0 /* read: receive buffer */
#define UART_THR 0 /* write: transmit holding */
#define UART_IER 1
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define LSR_DR 0x01   /* data ready */
#define LSR_THRE 0x20 /* transmit holding register empty */

/* Give up waiting for THRE after this many polls and write anyway, so a
 * broken LSR cannot hang the guest silently. */
#define THRE_POLL_LIMIT 100000

void uart_init(void)
{
	/* No interrupts, 8N1 (DLAB clear, the divisor is left alone), DTR|RTS.
	 * The FIFOs are deliberately not reset: that would drop bytes a host
	 * might already have queued for the echo test. */
	outb(COM1 + UART_IER, 0x00);
	outb(COM1 + UART_LCR, 0x03);
	outb(COM1 + UART_MCR, 0x03);
}

void uart_putc(char c)
{
	for (int i = 0; i < THRE_POLL_LIMIT; i++) {
		if (inb(COM1 + UART_LSR) & LSR_THRE)
			break;
		cpu_pause();
	}
	outb(COM1 + UART_THR, (u8)c);
}

int uart_getc(void)
{
	while (!(inb(COM1 + UART_LSR) & LSR_DR))
		cpu_pause();
	return inb(COM1 + UART_RBR);
}

void kputs(const char *s)
{
	while (*s)
		uart_putc(*s++);
}

/* ---- printf ---------------------------------------------------------- */

static void put_padded(const char *s, size_t len, int width, char pad)
{
	for (int i = (int)len; i < width; i++)
		uart_putc(pad);
	while (len--)
		uart_putc(*s++);
}

static void put_num(u64 v, unsigned base, int neg, int width, char pad)
{
	char buf[24];
	size_t n = 0;

	if (base == 16) {
		do {
			buf[sizeof(buf) - 1 - n++] = "0123456789abcdef"[v & 15];
			v >>= 4;
		} while (v);
	} else {
		do {
			buf[sizeof(buf) - 1 - n++] = (char)('0' + v % 10);
			v /= 10;
		} while (v);
	}
	if (neg)
		buf[sizeof(buf) - 1 - n++] = '-';
	put_padded(&buf[sizeof(buf) - n], n, width, pad);
}

/*
 * Supports %%, %c, %s, %d, %u, %x with an optional '0' flag, a width and
 * the length modifiers l, ll and z.
 */
void kvprintf(const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			uart_putc(*fmt);
			continue;
		}
		fmt++;
		char pad = ' ';
		int width = 0, lng = 0;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			lng = 1;
			fmt++;
		}
		switch (*fmt) {
		case 'c':
			uart_putc((char)va_arg(ap, int));
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			put_padded(s, kstrlen(s), width, ' ');
			break;
		}
		case 'd': {
			long long v = lng ? va_arg(ap, long long) : va_arg(ap, int);
			put_num(v < 0 ? -(u64)v : (u64)v, 10, v < 0, width, pad);
			break;
		}
		case 'u':
			put_num(lng ? va_arg(ap, u64) : va_arg(ap, unsigned), 10, 0, width, pad);
			break;
		case 'x':
			put_num(lng ? va_arg(ap, u64) : va_arg(ap, unsigned), 16, 0, width, pad);
			break;
		case '\0':
			return;
		default:
			uart_putc('%');
			uart_putc(*fmt);
			break;
		}
	}
}

void kprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	kvprintf(fmt, ap);
	va_end(ap);
}

/* ---- strings ----------------------------------------------------------- */

size_t kstrlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int kstrneq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

/* The compiler may emit calls to these four even in freestanding mode. */
/*
 * String instructions: on a host that emulates each guest instruction (PVM),
 * one `rep stosb`/`rep movsb` costs far less than a loop of byte moves.
 */
void *memset(void *d, int c, size_t n)
{
	void *p = d;
	__asm__ volatile("rep stosb" : "+D"(p), "+c"(n) : "a"(c) : "memory");
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	void *dp = d;
	__asm__ volatile("rep movsb" : "+D"(dp), "+S"(s), "+c"(n) : : "memory");
	return d;
}

void *memmove(void *d, const void *s, size_t n)
{
	u8 *dp = d;
	const u8 *sp = s;
	if (dp < sp) {
		while (n--)
			*dp++ = *sp++;
	} else {
		while (n--)
			dp[n] = sp[n];
	}
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *x = a, *y = b;
	size_t i = 0;
	/* Eight bytes at a time up to the first difference (see memset). */
	for (; i + 8 <= n; i += 8) {
		u64 u, v;
		__builtin_memcpy(&u, x + i, 8);
		__builtin_memcpy(&v, y + i, 8);
		if (u != v)
			break;
	}
	for (; i < n; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}
