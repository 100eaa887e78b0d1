/* exif.c -- the little of an EXIF block that decoding needs.
 *
 * An EXIF block is a TIFF structure: a byte-order mark ("II" little-endian,
 * "MM" big-endian), the magic 42, and the offset of IFD0, a table of 12-byte
 * entries (tag, type, count, value-or-offset). We read only IFD0: its
 * Orientation tag (so image.c can make the pixels upright) and its GPS IFD
 * pointer (so `inspect` can warn that a file carries a location). The block
 * comes straight from untrusted files, so every offset and count is checked
 * against the block's length before it is followed; nothing else is
 * followed, so there is no IFD chain to loop on. */
#include "config.h"

#include <string.h>

#include "internal.h"

#define EXIF_TAG_ORIENTATION 0x0112
#define EXIF_TAG_GPS_IFD 0x8825
#define TIFF_TYPE_SHORT 3
#define TIFF_TYPE_LONG 4
#define TIFF_TYPE_IFD 13
#define TIFF_ENTRY_BYTES 12

/* A bounds-checked view of the block in its byte order. */
typedef struct exif_reader {
    const uint8_t *p;
    size_t len;
    int big_endian;
} exif_reader;

/* Reads a 16-bit value at off; the caller has checked off + 2 <= len. */
static uint16_t rd16(const exif_reader *r, size_t off)
{
    const uint8_t *b = r->p + off;
    return r->big_endian ? (uint16_t)(b[0] << 8 | b[1]) : (uint16_t)(b[1] << 8 | b[0]);
}

/* Reads a 32-bit value at off; the caller has checked off + 4 <= len. */
static uint32_t rd32(const exif_reader *r, size_t off)
{
    const uint8_t *b = r->p + off;
    if (r->big_endian)
        return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    return (uint32_t)b[3] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[1] << 8 | b[0];
}

/* TM_OK when an IFD starting at off (count word, entries and next-IFD link)
 * lies wholly inside the block; *n receives its entry count. */
static tm_status ifd_bounds(const exif_reader *r, uint32_t off, unsigned *n)
{
    /* An IFD cannot overlap the 8-byte header. */
    if (off < 8 || (size_t)off > r->len || r->len - off < 2) return TM_ERR_CORRUPT;
    unsigned count = rd16(r, off);
    if (count == 0) return TM_ERR_CORRUPT;
    size_t need = 2 + (size_t)count * TIFF_ENTRY_BYTES + 4;
    if (r->len - off < need) return TM_ERR_CORRUPT;
    *n = count;
    return TM_OK;
}

/* Walks IFD0 at ifd0 and fills *out; any malformation is TM_ERR_CORRUPT. */
static tm_status read_ifd0(const exif_reader *r, uint32_t ifd0, tm_exif_summary *out)
{
    unsigned n;
    tm_status st = ifd_bounds(r, ifd0, &n);
    if (st != TM_OK) return st;

    int seen_orientation = 0, seen_gps = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t e = (size_t)ifd0 + 2 + (size_t)i * TIFF_ENTRY_BYTES;
        uint16_t tag = rd16(r, e), type = rd16(r, e + 2);
        uint32_t count = rd32(r, e + 4);
        if (tag == EXIF_TAG_ORIENTATION && !seen_orientation) {
            seen_orientation = 1;
            /* A SHORT with count 1 sits in the first two bytes of the value
             * field; anything else is not an orientation we trust. */
            if (type == TIFF_TYPE_SHORT && count == 1) {
                uint16_t v = rd16(r, e + 8);
                if (v >= 1 && v <= 8) out->orientation = v;
            }
        } else if (tag == EXIF_TAG_GPS_IFD && !seen_gps) {
            seen_gps = 1;
            if ((type != TIFF_TYPE_LONG && type != TIFF_TYPE_IFD) || count != 1) return TM_ERR_CORRUPT;
            uint32_t gps = rd32(r, e + 8);
            if (gps == ifd0) return TM_ERR_CORRUPT; /* points back at IFD0: a loop */
            unsigned gn;
            st = ifd_bounds(r, gps, &gn);
            if (st != TM_OK) return st;
            out->has_gps = 1;
        }
    }

    /* The next-IFD link (inside the bounds checked above) may end the chain
     * (0) but may not point outside the block or back at IFD0. IFD1 itself
     * (the thumbnail) is not read, so it is not checked further. */
    size_t link = (size_t)ifd0 + 2 + (size_t)n * TIFF_ENTRY_BYTES;
    uint32_t next = rd32(r, link);
    if (next != 0 && (next == ifd0 || next < 8 || (size_t)next >= r->len)) return TM_ERR_CORRUPT;
    return TM_OK;
}

tm_status tm_exif_parse(const uint8_t *data, size_t len, tm_exif_summary *out)
{
    if (!out) return TM_ERR_ARG;
    out->orientation = 1;
    out->has_gps = 0;
    if (!data || len < 8) return TM_ERR_CORRUPT;

    exif_reader r = {data, len, 0};
    if (data[0] == 'I' && data[1] == 'I') r.big_endian = 0;
    else if (data[0] == 'M' && data[1] == 'M') r.big_endian = 1;
    else return TM_ERR_CORRUPT;
    if (rd16(&r, 2) != 42) return TM_ERR_CORRUPT;

    tm_exif_summary found = {1, 0};
    tm_status st = read_ifd0(&r, rd32(&r, 4), &found);
    if (st != TM_OK) return st; /* *out keeps the "nothing known" defaults */
    *out = found;
    return TM_OK;
}
