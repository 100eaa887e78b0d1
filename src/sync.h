/* sync.h -- blind geometric synchronisation of the tiled mark (internal).
 *
 * The mark repeats a 125-pixel tile whose spectrum has the same magnitude at
 * every band bin, so any copy that was scaled by s and rotated by theta shows
 * a lattice of spectral lines at R(theta) k / (125 s), k an integer vector with
 * 4 <= |k| <= 20. sync.c reads (s, theta) from that lattice without the key
 * and resamples the suspect back to the marked frame (docs/scheme.md,
 * "Geometric synchronisation"). */
#ifndef TM_SYNC_H
#define TM_SYNC_H

#include "tracemark.h"

/* One geometric hypothesis: the suspect is the marked image scaled by scale,
 * turned rotation_deg counterclockwise (as attack "rotate:DEG"), then
 * stretched by D = diag(sqrt(a), 1 / sqrt(a)), a = exp(log_aspect), along the
 * suspect's own axes (a non-uniform resize: a = width factor / height factor,
 * scale their geometric mean); score is the lattice evidence in null standard
 * deviations. Zero-initialised fields mean no turn and no stretch. */
typedef struct tm_geom {
    double scale;
    double rotation_deg;
    double score;
    double log_aspect;
} tm_geom;

/* Search range of the estimate (suspect scale relative to the marked copy). */
#define TM_SYNC_SCALE_MIN 0.2
#define TM_SYNC_SCALE_MAX 5.0

/* Up to max candidate (scale, rotation, aspect) hypotheses for the mark's lattice in
 * luminance y (w x h), strongest first, always including the identity (scale
 * 1, rotation 0); rotation in (-45, 45] (the square lattice cannot tell
 * 90-degree turns and flips apart: the caller tries those). *n gets the count. */
tm_status tm_sync_estimate(const float *y, int w, int h, tm_geom *cands, int max, int *n);

/* The same estimate one stage at a time, so a caller that is sure of an
 * early stage's answer can stop there. Each analysis pass (full resolution,
 * and on suspects large enough 2x2- and 4x4-block averages, which see
 * enlarged copies; the one matching the tile scale a copy of this size was
 * marked with first) has two stages: similarities (scalings and turns),
 * then non-uniform stretches. tm_sync_begin keeps y (w x h) until
 * tm_sync_end (which takes NULL, and must be called whatever begin
 * returned). Each tm_sync_next runs one more stage and gives the candidates
 * of all stages so far, as tm_sync_estimate would; *more gets the number of
 * stages left. */
typedef struct tm_sync tm_sync;
#define TM_SYNC_MAX_STAGES 6 /* three passes, two stages each */
tm_status tm_sync_begin(const float *y, int w, int h, tm_sync **out);
tm_status tm_sync_next(tm_sync *s, tm_geom *cands, int max, int *n, int *more);
void tm_sync_end(tm_sync *s);

/* The suspect's luminance y (w x h) brought back to the marked frame under
 * hypothesis g (undo the scale and the counter-clockwise turn about the
 * centre): a new one-channel image of at most side x side pixels, centred;
 * suspects enlarged 2x or more are box-averaged first against aliasing.
 * TM_ERR_DIMENSIONS when less than 8 pixels a side would remain. */
tm_status tm_sync_warp(const float *y, int w, int h, const tm_geom *g, int side, tm_image **out);

/* The same warp made one row at a time, so a reader that streams rows needs
 * no warped image: tm_warp_begin checks and sets it up (keeping y until
 * tm_warp_end), tm_warp_dims gives the output's W x H, and tm_warp_row
 * writes output row yy (W samples) into dst. */
typedef struct tm_warp tm_warp;
tm_status tm_warp_begin(const float *y, int w, int h, const tm_geom *g, int side, tm_warp **out);
void tm_warp_dims(const tm_warp *wp, int *W, int *H);
void tm_warp_row(tm_warp *wp, int yy, float *dst);
void tm_warp_end(tm_warp *wp);

#endif
