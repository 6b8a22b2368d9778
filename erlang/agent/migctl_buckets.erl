%% migctl_buckets: the one bucket-checksum protocol of migctl.
%%
%% Three things compare stores by hash buckets: a Store's checksums
%% (package backends), `migctl consistency check' (two stores), and
%% `migctl cluster verify-replication' and the heal plan (the local copies
%% of one Mnesia table on several nodes). They all move checksums, not
%% rows, and they all do it here:
%%
%%   sums(Spec, Ranges, Opts)   one pass over the store, the count and the
%%                              digest sum of every bucket of many ranges
%%                              (a bisecting caller costs one table scan
%%                              per round, not one per range);
%%   keys(Spec, Ranges, Opts)   one pass, the keys of the rows in the
%%                              ranges (the buckets that differed) with
%%                              their digests and times;
%%   of_ids(Spec, Ids, Opts)    the same frames for given ids, by lookup
%%                              (a recheck of a few keys);
%%   changed_rows(Spec, Tab, S) the keys this node's change recorder has as
%%                              changed in Tab since S, each with Spec's
%%                              row digest (the keys a check left out as
%%                              in flight, read back by key); with a
%%                              fourth argument, a local Mnesia table,
%%                              that table's row of each key read right
%%                              after Spec's.
%%
%% Placement: H = erlang:phash2(Id, 2^32). Ranges are a binary of
%% <<Lo:64, Hi:64, Buckets:32>>* sorted by Lo and not overlapping; bucket
%% K of a range [Lo, Hi) holds the H with (H - Lo) * Buckets div (Hi - Lo)
%% =:= K (so bucket B of N over the whole space is H * N div 2^32).
%%
%% Digests (Opts {digest, D}; a row's digest is a 32-bit phash2, the
%% bucket's Sum the sum mod 2^64 of its rows' digests):
%%   content (default)  phash2({Id, Session without last_accessed}):
%%                      what two stores must agree on; every fetch
%%                      rewrites last_accessed. With {la_quantum, Q > 0}:
%%                      phash2({Id, Session without last_accessed,
%%                      LastAccessed div Q}): copies whose last_accessed
%%                      differ by Q or more always land in different
%%                      quanta, so a stale copy always changes its
%%                      bucket's sum (closer copies may differ too, which
%%                      only sends the bucket to the next round, where the
%%                      caller applies the exact rule).
%%   record             the whole record: phash2({Id, Session}) for ETS
%%                      and DETS, phash2({Id, Session, WriteTime}) for a
%%                      Mnesia row {Tab, Id, Session, WriteTime}: replicas
%%                      are copies of each other, so any difference is one.
%%                      migctl_cluster's merge compares this digest too.
%%
%% A Mnesia store is read from this node's local copy (the ETS table of a
%% disc_copies or ram_copies table): no remote reads, no transaction.
%%
%% Keys in flight (Opts {exclude_changed, MnesiaTab, SinceMs}, sums/3 and
%% keys/3, any store kind): the rows whose key THIS node's change recorder
%% (migctl_recorder, migctl_node library) has as changed at or after
%% SinceMs in MnesiaTab are left out of the sums and the listing. Under
%% live traffic a key written while a full check runs makes its bucket
%% differ between two reads made at slightly different moments, so the
%% bisection chases it down to rows, round after round; left out of the
%% buckets on both sides, such keys are verified by key at the end by the
%% caller (which reads them back with changed_rows/3 on every node whose
%% passes left keys out, and must read every key the recorders list, or it
%% would skip what it left out).
%% The set is the recorder's at the start of the pass (one read of its
%% time index, after it has handled what was already sent to it). A
%% recorder that is not running, or does not cover MnesiaTab back to
%% SinceMs (restarted, pruned, not subscribed), fails the call with
%% no_recorder or recorder_gap: leaving out nothing would let the two
%% sides' sums disagree silently, so the caller falls back to comparing
%% every row. The reply then carries one more element, the number of rows
%% of the store the pass left out (sums: {ok, Bin, Size, Odd, Excluded};
%% keys: {ok, Frames, N, Odd, Excluded}); without the option the replies
%% are as below.
%%
%% The kept pass (Opts {pass, Token} beside {exclude_changed, ...}): the
%% check's first sums/3 over a store keeps its rows' ids and digests on the
%% node (migctl_pass), and the same check's later sums/3 and keys/3 are
%% answered from them (see pass_key/2 below).
%%
%% Rows that are not sessions ({Id :: binary(), Session :: map()}) cannot
%% be digested by content, and a check must not call two stores equal
%% because it skipped what it could not read: they are counted (with the
%% first keys) and returned as Odd (migctl_lib:odd/0). Under the record
%% digest a Mnesia row of any content is digested as it is.
%%
%% A DETS file is read directly, beside its server (migctl_dets:fold/4):
%% through the server (dets:foldl/3) a full pass at 1.4M sessions under
%% live traffic took ~50 s, a check makes about three, and the
%% application's own session reads and writes queued behind the pass's
%% chunk requests, since one server process answers them all. Read
%% directly, the server is asked only to flush its write cache, to fix the
%% table, for the slot count after each band of the file, and for the few
%% slots that do not validate. One pass of sums over 300k sessions (a 299
%% MB file, 2 cores, medians of 3): idle, 1.1 s through the server and
%% 1.5 s directly (the direct pass also reads every slot entry, sorts them
%% and checks every key's slot); with two clients reading and writing
%% sessions through the server meanwhile, 17.9 s through the server and
%% 1.7 s directly. Opts {dets_read, How} (sums/3 and keys/3): auto
%% (default), server (dets:foldl/3, the reference the direct pass is
%% tested against), raw_unfixed (see migctl_dets:fold/4, for tests only).
%% Opts method (sums/3 and keys/3) appends to the reply how the store was
%% read: ets (ETS, Mnesia), raw, server or redone (migctl_dets:fold/4).
%%
%% Contract: as migctl_agent (store specs {ets, Tab} | {dets, Tab, File,
%% Create, Owner} | {mnesia, Tab}; {ok, ...} | {error, Reason}).
-module(migctl_buckets).

-export([version/0, sums/3, keys/3, of_ids/3, changed_rows/3, changed_rows/4, drop_pass/1]).
%% For the other agent modules on the node.
-export([sums_local/3, fold/3, fold/4, ready/1, lookup/3, lookup_many/3, content_frame/2]).

-define(VSN, 3).
-define(M32, 4294967296).
%% Keys per DETS request of lookup_many/3. One request holds the DETS
%% server for its reads (a few ms for 256 keys of a 1.65 GB file) and,
%% in changed_rows/4, is the most time between a key's two reads.
-define(LOOKUP_KEYS, 256).
%% Process dictionary key: rows left out by {exclude_changed, ...}.
-define(SKIPPED, {?MODULE, skipped}).

-import(migctl_lib, [safe/1, fail/1, la/1, mint/2]).

version() -> {ok, ?VSN}.

%% ready(Spec) -> Size: the store exists and is open (migctl_agent opens a
%% DETS file the application does not hold, with an owner process). A
%% Mnesia store must have its local copy here, which is what is read.
ready({mnesia, Tab}) ->
    migctl_lib:local_copy(Tab),
    ets:info(Tab, size);
ready(Spec) ->
    case migctl_agent:count(Spec) of
        {ok, N} -> N;
        {error, R} -> fail(R)
    end.

%% mode(Opts) -> 0 | Q > 0 | record: the digest, as digest/4 takes it.
mode(Opts) ->
    case lists:keyfind(digest, 1, Opts) of
        {digest, record} -> record;
        _ ->
            case lists:keyfind(la_quantum, 1, Opts) of
                {la_quantum, Q} when is_integer(Q), Q > 0 -> Q;
                _ -> 0
            end
    end.

%% digest(Mode, Id, S, W): W is the Mnesia write time, none for ETS/DETS.
digest(0, Id, S, _) -> erlang:phash2({Id, maps:remove(last_accessed, S)}, ?M32);
digest(record, Id, S, none) -> erlang:phash2({Id, S}, ?M32);
digest(record, Id, S, W) -> erlang:phash2({Id, S, W}, ?M32);
digest(Q, Id, S, _) -> erlang:phash2({Id, maps:remove(last_accessed, S), la(S) div Q}, ?M32).

wtime(W) when is_integer(W) -> W;
wtime(_) -> 0.

%% ------------------------------------------------------------------ ranges

%% parse_ranges(Bin) -> {Tuple of {Lo, Hi, Buckets, Base}, TotalBuckets}
parse_ranges(Bin) -> parse_ranges(Bin, 0, -1, []).

parse_ranges(<<>>, Total, _, Acc) -> {list_to_tuple(lists:reverse(Acc)), Total};
parse_ranges(<<Lo:64, Hi:64, B:32, Rest/binary>>, Total, PrevHi, Acc)
  when Hi > Lo, Hi =< ?M32, B > 0, Lo >= PrevHi ->
    parse_ranges(Rest, Total + B, Hi, [{Lo, Hi, B, Total} | Acc]);
parse_ranges(_, _, _, _) -> fail(bad_ranges).

%% locate(H, Ranges) -> none | {Lo, Hi, Buckets, Base}, by binary search.
locate(H, R) -> locate(H, R, 1, tuple_size(R)).

locate(_, _, I, J) when I > J -> none;
locate(H, R, I, J) ->
    M = (I + J) div 2,
    {Lo, Hi, _, _} = E = element(M, R),
    if
        H < Lo -> locate(H, R, I, M - 1);
        H >= Hi -> locate(H, R, M + 1, J);
        true -> E
    end.

%% index(H, Ranges) -> none | the bucket's 0-based index over all ranges.
index(H, {{Lo, Hi, B, 0}}) when H >= Lo, H < Hi -> ((H - Lo) * B) div (Hi - Lo);
index(_, {{_, _, _, 0}}) -> none;
index(H, R) ->
    case locate(H, R) of
        none -> none;
        {Lo, Hi, B, Base} -> Base + ((H - Lo) * B) div (Hi - Lo)
    end.

%% ------------------------------------------------------------------- sums

%% sums(Spec, Ranges, Opts) ->
%%   {ok, <<Count:32, Sum:64>>*TotalBuckets, Size, Odd}
%%   {ok, <<Count:32, Sum:64, MaxWritten:64/signed>>*TotalBuckets, Size, Odd}
%%   with max_written in Opts.
%% Opts: {digest, content | record}, {la_quantum, Q}, max_written (the
%% latest Mnesia write time in each bucket, 0 for ETS/DETS; the heal plan
%% dates a split with it), {exclude_changed, Tab, SinceMs} (see the top:
%% the reply then ends with the number of rows left out), {dets_read, How}
%% and method (see the top: the reply then ends with how the store was
%% read). Size is the store's size before the pass.
sums(Spec, RangesBin, Opts) ->
    safe(fun() ->
        Size = ready(Spec),
        How = dets_read(Opts),
        Reply = case excluded(Opts) of
                    none ->
                        {Bin, _, Method} = sums_local(Spec, RangesBin, Opts, none, How),
                        {ok, Bin, Size, migctl_lib:odd()};
                    Ex ->
                        {Bin, _, Method} = case pass_key(Spec, Opts) of
                                               none ->
                                                   sums_local(Spec, RangesBin, Opts, Ex, How);
                                               {Key, {RT, Since, Mode}} ->
                                                   sums_pass(Spec, RangesBin, Opts, Ex, How, Key, {RT, Since, Mode})
                                           end,
                        {ok, Bin, Size, migctl_lib:odd(), erase(?SKIPPED)}
                end,
        with_method(Reply, Method, Opts)
    end).

%% ------------------------------------------------------- the kept pass

%% Opts {pass, Token} (sums/3 and keys/3, with {exclude_changed, ...}):
%% the first sums/3 of a check over a store keeps, beside its sums, every
%% row it did not leave out (migctl_pass: why that is sound, and what it
%% costs); the check's later sums/3 and keys/3 with the same token,
%% recorder table and Since are answered from what was kept instead of
%% reading the store again: the rows of the ranges asked, less the keys
%% the recorder now has as changed. keys/3 then reads the current rows of
%% those ids by key. With method in Opts, such an answer says kept. When
%% nothing was kept (the token is unknown, the pass was dropped after
%% ?IDLE_MS, another node) the call reads the store, as without the
%% option. Any store kind: a DETS file is the one that costs most to read
%% again, but at 1.8M sessions a later pass over the Mnesia side's local
%% copy took 12-13 s too, beside the application.

%% pass_key(Spec, Opts) -> none | {Key, {RecorderTab, Since, Mode}}
pass_key(Spec, Opts) ->
    case {lists:keyfind(pass, 1, Opts), lists:keyfind(exclude_changed, 1, Opts),
          lists:member(max_written, Opts)} of
        {{pass, Token}, {exclude_changed, RT, Since}, false} when is_integer(Token) ->
            {{Token, store_name(Spec)}, {RT, Since, mode(Opts)}};
        _ -> none
    end.

store_name({dets, Tab, File, _, _}) -> {dets, Tab, File};
store_name({Kind, Tab}) -> {Kind, Tab}.

%% sums_pass(...) -> {Bin, Total, Method}: from the kept pass when there
%% is one, else a pass that keeps its rows.
sums_pass(Spec, RangesBin, Opts, Ex, How, Key, Meta) ->
    case catch migctl_pass:find(Key, Meta) of
        {ok, T, #{skipped := Skipped1}} ->
            {R, Total} = parse_ranges(RangesBin),
            C = counters:new(2 * max(Total, 1), []),
            kept_rows(T, R, Ex, Skipped1,
                      fun(H, _Id, D) ->
                              I = 2 * index(H, R),
                              counters:add(C, I + 1, 1),
                              counters:add(C, I + 2, D)
                      end),
            {<< <<(counters:get(C, 2 * I + 1)):32, (counters:get(C, 2 * I + 2)):64>>
                || I <- lists:seq(0, Total - 1) >>, Total, kept};
        _ ->
            %% Kept only with room for it (migctl_pass:room/1): a node
            %% short of memory is read again at the later rounds instead.
            Start = case catch migctl_pass:room(ready(Spec)) of
                        true -> catch migctl_pass:start(Key, Meta);
                        _ -> no_room
                    end,
            case Start of
                T when is_reference(T) ->
                    try sums_local(Spec, RangesBin, Opts, Ex, How, T) of
                        {_, _, _} = Reply ->
                            %% Best effort: a pass not completed is not
                            %% found, and the later rounds read the file.
                            _ = catch migctl_pass:complete(Key, #{skipped => get(?SKIPPED)}),
                            Reply
                    catch C:E:St ->
                            _ = catch migctl_pass:drop(element(1, Key)),
                            erlang:raise(C, E, St)
                    end;
                _ ->
                    sums_local(Spec, RangesBin, Opts, Ex, How)
            end
    end.

%% kept_rows(T, Ranges, Ex, Skipped1, F): F(H, Id, Digest) for every kept
%% row whose hash is in Ranges and whose key is not in Ex (each once: the
%% ranges' parts are taken as a set). ?SKIPPED: the rows the first pass
%% left out plus the kept rows now in Ex, the rows a pass now would leave
%% out (but those written since the first pass).
kept_rows(T, R, Ex, Skipped1, F) ->
    Parts = lists:usort(lists:append([lists:seq(Lo bsr 16, (Hi - 1) bsr 16)
                                      || {Lo, Hi, _, _} <- tuple_to_list(R)])),
    lists:foreach(fun(P) ->
                          [F(H, Id, D) || {_, Id, D} <- ets:lookup(T, P), not is_map_key(Id, Ex),
                                          H <- [erlang:phash2(Id, ?M32)], index(H, R) =/= none]
                  end, Parts),
    Now = length([K || K <- maps:keys(Ex), is_binary(K),
                       lists:keymember(K, 2, ets:lookup(T, erlang:phash2(K, ?M32) bsr 16))]),
    put(?SKIPPED, Skipped1 + Now),
    ok.

%% drop_pass(Token) -> {ok, Token}: the passes kept for the check Token go
%% (at its end; see pass_key/2).
drop_pass(Token) when is_integer(Token) ->
    safe(fun() -> ok = migctl_pass:drop(Token), {ok, Token} end).

%% dets_read(Opts) -> auto | server | raw_unfixed (migctl_dets:fold/4).
dets_read(Opts) ->
    case lists:keyfind(dets_read, 1, Opts) of
        false -> auto;
        {dets_read, H} when H =:= auto; H =:= server; H =:= raw_unfixed -> H;
        _ -> fail(bad_dets_read)
    end.

%% with_method(Reply, Method, Opts): Reply, with Method appended when Opts
%% asks for it.
with_method(Reply, Method, Opts) ->
    case lists:member(method, Opts) of
        true -> erlang:append_element(Reply, Method);
        false -> Reply
    end.

%% sums_local(Spec, Ranges, Opts) -> {Bin, TotalBuckets}, for a caller on
%% this node (migctl_check:native_compare/3). Fails instead of returning.
sums_local(Spec, RangesBin, Opts) ->
    {Bin, Total, _} = sums_local(Spec, RangesBin, Opts, none, dets_read(Opts)),
    {Bin, Total}.

%% sums_local(Spec, Ranges, Opts, Ex, How[, Keep]) -> {Bin, TotalBuckets, Method}
%% Keep: none, or a migctl_pass table that gets every row the pass does not
%% leave out.
sums_local(Spec, RangesBin, Opts, Ex, How) ->
    sums_local(Spec, RangesBin, Opts, Ex, How, none).

sums_local(Spec, RangesBin, Opts, Ex, How, Keep) ->
    {R, Total} = parse_ranges(RangesBin),
    Mode = mode(Opts),
    C = counters:new(2 * max(Total, 1), []),
    %% A direct DETS pass that must be redone through the server
    %% (migctl_dets:fold/4) starts again from empty buckets (and an empty
    %% kept pass).
    Zero = fun(Ctr, N) ->
                   lists:foreach(fun(I) -> counters:put(Ctr, I, 0) end, lists:seq(1, N)),
                   Keep =:= none orelse ets:delete_all_objects(Keep)
           end,
    Count = case R of
                _ when Keep =/= none ->
                    %% Every row goes to the kept pass, in the ranges or
                    %% not; its hash and digest are computed once.
                    fun(Id, S, Wt) ->
                            H = erlang:phash2(Id, ?M32),
                            D = digest(Mode, Id, S, Wt),
                            ets:insert(Keep, {H bsr 16, Id, D}),
                            case index(H, R) of
                                none -> none;
                                I0 ->
                                    I = 2 * I0,
                                    counters:add(C, I + 1, 1),
                                    counters:add(C, I + 2, D),
                                    I
                            end
                    end;
                {{Lo, Hi, B, 0}} ->
                    %% One range (the first round of every full check): no search.
                    W = Hi - Lo,
                    fun(Id, S, Wt) ->
                            H = erlang:phash2(Id, ?M32),
                            if
                                H >= Lo, H < Hi ->
                                    I = 2 * (((H - Lo) * B) div W),
                                    counters:add(C, I + 1, 1),
                                    counters:add(C, I + 2, digest(Mode, Id, S, Wt)),
                                    I;
                                true -> none
                            end
                    end;
                _ ->
                    fun(Id, S, Wt) ->
                            H = erlang:phash2(Id, ?M32),
                            case locate(H, R) of
                                none -> none;
                                {Lo, Hi, B, Base} ->
                                    I = 2 * (Base + ((H - Lo) * B) div (Hi - Lo)),
                                    counters:add(C, I + 1, 1),
                                    counters:add(C, I + 2, digest(Mode, Id, S, Wt)),
                                    I
                            end
                    end
            end,
    case lists:member(max_written, Opts) of
        false ->
            Method = fold(Spec, Mode, skip(Ex, Count),
                          #{read => How, reset => fun() -> Zero(C, 2 * max(Total, 1)), reset_skipped(Ex) end}),
            {<< <<(counters:get(C, 2 * I + 1)):32, (counters:get(C, 2 * I + 2)):64>>
                || I <- lists:seq(0, Total - 1) >>, Total, Method};
        true ->
            M = atomics:new(max(Total, 1), [{signed, true}]),
            Reset = fun() ->
                            Zero(C, 2 * max(Total, 1)),
                            lists:foreach(fun(I) -> atomics:put(M, I, 0) end, lists:seq(1, max(Total, 1))),
                            reset_skipped(Ex)
                    end,
            Method = fold(Spec, Mode, skip(Ex, fun(Id, S, Wt) ->
                                              case Count(Id, S, Wt) of
                                                  none -> ok;
                                                  I ->
                                                      K = I div 2 + 1,
                                                      Wi = wtime(Wt),
                                                      Wi > atomics:get(M, K) andalso atomics:put(M, K, Wi)
                                              end
                                      end), #{read => How, reset => Reset}),
            {<< <<(counters:get(C, 2 * I + 1)):32, (counters:get(C, 2 * I + 2)):64,
                  (atomics:get(M, I + 1)):64/signed>> || I <- lists:seq(0, Total - 1) >>, Total, Method}
    end.

%% excluded(Opts) -> none | #{Key => []}: the keys this node's change
%% recorder has as changed in Tab at or after Since (Opts
%% {exclude_changed, Tab, Since}), read once; fails with no_recorder or
%% recorder_gap when the recorder cannot say (see the top). The count of
%% rows left out is kept in the process dictionary (?SKIPPED) by skip/2.
excluded(Opts) ->
    case lists:keyfind(exclude_changed, 1, Opts) of
        {exclude_changed, Tab, Since} when is_atom(Tab), is_integer(Since) ->
            Info = case code:ensure_loaded(migctl_recorder) of
                       {module, _} -> catch migctl_recorder:info();
                       _ -> #{running => false}
                   end,
            case Info of
                #{running := true, tables := Ts} ->
                    case [C || #{table := T, since := C} <- Ts, T =:= Tab] of
                        [C] when is_integer(C), C =< Since -> ok;
                        _ -> fail(recorder_gap)
                    end;
                _ -> fail(no_recorder)
            end,
            put(?SKIPPED, 0),
            maps:from_keys(migctl_recorder:changed_since(Tab, Since), []);
        {exclude_changed, _, _} -> fail(bad_exclude);
        false -> none
    end.

%% reset_skipped(Ex): the count of rows left out back to 0, for a pass
%% that starts again.
reset_skipped(none) -> ok;
reset_skipped(_) -> put(?SKIPPED, 0), ok.

%% skip(Ex, F): F for the rows whose key is not in Ex, counting the others.
skip(none, F) -> F;
skip(Ex, F) ->
    fun(Id, S, W) ->
            case is_map_key(Id, Ex) of
                true -> put(?SKIPPED, get(?SKIPPED) + 1), none;
                false -> F(Id, S, W)
            end
    end.

%% fold(Spec, Mode, F) calls F(Id, S, W) for every row the digest Mode can
%% take (W: the Mnesia write time, none for ETS/DETS) and counts the others
%% (migctl_lib:odd_row/1) for the caller to return with migctl_lib:odd/0.
%% Without a reset (fold/4) a DETS file is read through its server: a
%% direct pass that must be redone needs the caller to drop what F
%% gathered.
fold(Spec, Mode, F) -> fold(Spec, Mode, F, #{}).

%% fold(Spec, Mode, F, #{read => How, reset => Reset}) -> ets | raw | server | redone
%% fold/3 reading a DETS file as How says (migctl_dets:fold/4; default
%% auto); Reset() must clear what F gathered: a direct pass that cannot be
%% trusted is redone through the server. Returns how the store was read.
fold({ets, Tab}, _, F, _) ->
    migctl_lib:odd_reset(),
    ets:foldl(fun({Id, S}, A) when is_binary(Id), is_map(S) -> F(Id, S, none), A;
                 (Row, A) -> migctl_lib:odd_row(migctl_lib:key(ets, Row)), A end, ok, Tab),
    ets;
fold({dets, Tab, _, _, _}, _, F, O) ->
    migctl_lib:odd_reset(),
    {How, Reset} = case O of
                       #{reset := R} -> {maps:get(read, O, auto), R};
                       _ -> {server, none}
                   end,
    migctl_dets:fold(Tab, fun({Id, S}) when is_binary(Id), is_map(S) -> F(Id, S, none);
                             (Row) -> migctl_lib:odd_row(migctl_lib:key(dets, Row))
                          end, fun() -> migctl_lib:odd_reset(), Reset() end, How);
fold({mnesia, Tab}, record, F, _) ->
    migctl_lib:local_copy(Tab),
    migctl_lib:odd_reset(),
    ets:foldl(fun({_, Id, S, W}, A) -> F(Id, S, W), A;
                 (Row, A) -> migctl_lib:odd_row(migctl_lib:key(mnesia, Row)), A end, ok, Tab),
    ets;
fold({mnesia, Tab}, _, F, _) ->
    migctl_lib:local_copy(Tab),
    migctl_lib:odd_reset(),
    ets:foldl(fun({_, Id, S, W}, A) when is_binary(Id), is_map(S) -> F(Id, S, W), A;
                 (Row, A) -> migctl_lib:odd_row(migctl_lib:key(mnesia, Row)), A end, ok, Tab),
    ets.

%% ------------------------------------------------------------------- keys

%% keys(Spec, Ranges, Opts) -> {ok, Frames, N, Odd}
%% Every row whose hash is in one of the ranges (bucket counts are
%% ignored), as frame/4 writes it. Opts: {digest, D} (default content
%% WITHOUT a quantum: last_accessed travels apart so the caller can apply
%% its tolerance exactly), times (the frame carries the write and creation
%% times), {limit, N} (fails with too_many_rows beyond N rows, so that a
%% mistaken call cannot ship a whole table), {exclude_changed, Tab,
%% SinceMs} (see the top: the reply then ends with the number of rows the
%% pass left out, in the ranges or not: {ok, Frames, N, Odd, Excluded}),
%% {dets_read, How} and method (see the top: the reply then ends with how
%% the store was read).
keys(Spec, RangesBin, Opts) ->
    safe(fun() ->
        _ = ready(Spec),
        {R, _} = parse_ranges(RangesBin),
        How = dets_read(Opts),
        Ex = excluded(Opts),
        Mode = case mode(Opts) of record -> record; _ -> 0 end,
        Times = lists:member(times, Opts),
        Limit = case lists:keyfind(limit, 1, Opts) of
                    {limit, L} when is_integer(L) -> L;
                    _ -> infinity
                end,
        Kept = case {Ex, pass_key(Spec, Opts)} of
                   {none, _} -> none;
                   {_, none} -> none;
                   {_, {PK, {RT, Since, _}}} -> catch migctl_pass:find(PK, {RT, Since, any})
               end,
        case Kept of
            {ok, T, #{skipped := Skipped1}} ->
                keys_kept(Spec, T, R, Ex, Skipped1, Mode, Times, Limit, Opts);
            _ ->
                keys_pass(Spec, R, How, Ex, Mode, Times, Limit, Opts)
        end
    end).

%% keys_kept(...): keys/3 from a kept pass (see pass_key/2): the ids of the
%% ranges from there, their rows read now (in batches, lookup_many/3).
keys_kept(Spec, T, R, Ex, Skipped1, Mode, Times, Limit, Opts) ->
    Key = make_ref(),
    put(Key, []),
    kept_rows(T, R, Ex, Skipped1, fun(_, Id, _) -> put(Key, [Id | get(Key)]) end),
    Ids = erase(Key),
    length(Ids) =< Limit orelse fail(too_many_rows),
    migctl_lib:odd_reset(),
    Rows = lookup_many(Spec, Mode, Ids),
    with_method({ok, iolist_to_binary([frame(Mode, Times, Id, S, W) || {Id, S, W} <- Rows]), length(Rows),
                 migctl_lib:odd(), erase(?SKIPPED)}, kept, Opts).

%% keys_pass(...): keys/3 by a pass over the store.
keys_pass(Spec, R, How, Ex, Mode, Times, Limit, Opts) ->
    Key = make_ref(),
    put(Key, {0, []}),
    Method = fold(Spec, Mode, skip(Ex, fun(Id, S, W) when is_binary(Id) ->
                                       case index(erlang:phash2(Id, ?M32), R) of
                                           none -> ok;
                                           _ ->
                                               {N, Acc} = get(Key),
                                               N < Limit orelse fail(too_many_rows),
                                               put(Key, {N + 1, [frame(Mode, Times, Id, S, W) | Acc]})
                                       end;
                                  (_, _, _) -> ok
                               end),
                  #{read => How, reset => fun() -> put(Key, {0, []}), reset_skipped(Ex) end}),
    {N, Acc} = erase(Key),
    with_method(case Ex of
                    none -> {ok, iolist_to_binary(Acc), N, migctl_lib:odd()};
                    _ -> {ok, iolist_to_binary(Acc), N, migctl_lib:odd(), erase(?SKIPPED)}
                end, Method, Opts).

%% frame(Mode, Times, Id, S, W) ->
%%   <<IdLen:32, Id, Digest:32, LastAccessed:64/signed>>                 (no times)
%%   <<IdLen:32, Id, Digest:32, LastAccessed:64/signed,
%%     Written:64/signed, Created:64/signed>>                            (times)
%% Without times LastAccessed is 0 when absent, with times -1 (as Created;
%% Written is 0 for ETS/DETS rows).
frame(Mode, false, Id, S, W) ->
    [<<(byte_size(Id)):32>>, Id, <<(digest(Mode, Id, S, W)):32, (la(S)):64/signed>>];
frame(Mode, true, Id, S, W) ->
    [<<(byte_size(Id)):32>>, Id, <<(digest(Mode, Id, S, W)):32, (mint(last_accessed, S)):64/signed,
                                   (wtime(W)):64/signed, (mint(created_at, S)):64/signed>>].

%% of_ids(Spec, <<IdLen:32, Id/binary>>*, Opts) -> {ok, Frames, N}
%% The frames of keys/3 (same Opts but limit) for the given ids that are
%% present, by lookup: reading a few keys is quick, so two nodes can be
%% asked at nearly the same instant (rechecks), and a sample is compared
%% without a scan.
of_ids(Spec, IdsBin, Opts) ->
    safe(fun() ->
        _ = ready(Spec),
        Mode = case mode(Opts) of record -> record; _ -> 0 end,
        Times = lists:member(times, Opts),
        _ = [migctl_lib:local_copy(T) || {mnesia, T} <- [Spec]],
        Rows = lookup_many(Spec, Mode, migctl_lib:ids(IdsBin)),
        {ok, iolist_to_binary([frame(Mode, Times, Id, S, W) || {Id, S, W} <- Rows]), length(Rows)}
    end).

%% changed_rows(Spec, Tab, SinceMs) ->
%%   {ok, Z(<<Len:16, Id, 0>> | <<Len:16, Id, 1, Digest:32, LA:64/signed>>)*, N}
%% (Z: zlib:compress/1) The keys this node's change recorder has as changed
%% in the Mnesia table Tab at or after SinceMs (binary keys: sessions'),
%% each with what Spec (any store kind) holds for it now: absent (0), or
%% the content digest and last_accessed keys/3 lists. Fails with
%% no_recorder or recorder_gap as {exclude_changed, ...} does: a check that
%% left these keys out of its buckets must read back every one of them.
%% Ids are short binaries (erlmcp's 32 hex digits) and the reply is
%% compressed: a check under traffic lists thousands of them.
changed_rows(Spec, Tab, Since) ->
    safe(fun() ->
        _ = ready(Spec),
        Keys = changed_keys(Tab, Since),
        _ = [migctl_lib:local_copy(T) || {mnesia, T} <- [Spec]],
        Frames = [begin
                      Held = held(Spec, C),
                      [row_frame(Held, K) || K <- C]
                  end || C <- chunks(Keys, ?LOOKUP_KEYS)],
        {ok, zlib:compress(Frames), length(Keys)}
    end).

%% changed_rows(Spec, Tab, SinceMs, Pair) -> {ok, Z, N, PairZ}: as
%% changed_rows/3, and for each key the row of the store Pair too (a
%% Mnesia table with a local copy on this node, {mnesia, T}), read right
%% after Spec's rows of the same keys (?LOOKUP_KEYS keys at a time: one
%% DETS request, then their Mnesia rows). A key written all the time (the
%% check's keys in flight are the hot ones) then has its two copies read
%% milliseconds apart, not as far apart as two separate reads of every
%% key: read separately at 1.8M sessions under 1,000 ops/s, 8,032 of the
%% 14,441 keys in flight differed for that alone and were fetched whole
%% and read again. PairZ lists the same keys in the same order.
changed_rows(Spec, Tab, Since, {mnesia, PT} = Pair) when is_atom(PT) ->
    safe(fun() ->
        _ = ready(Spec),
        _ = ready(Pair),
        Keys = changed_keys(Tab, Since),
        _ = [migctl_lib:local_copy(T) || {mnesia, T} <- [Spec]],
        {A, B} = lists:unzip([begin
                                  HeldA = held(Spec, C),
                                  HeldB = held(Pair, C),
                                  {[row_frame(HeldA, K) || K <- C], [row_frame(HeldB, K) || K <- C]}
                              end || C <- chunks(Keys, ?LOOKUP_KEYS)]),
        {ok, zlib:compress(A), length(Keys), zlib:compress(B)}
    end).

changed_keys(Tab, Since) ->
    [K || K <- maps:keys(excluded([{exclude_changed, Tab, Since}])), is_binary(K),
          byte_size(K) < 65536].

%% held(Spec, Keys) -> #{Id => {S, W}}: the rows of Keys that Spec holds.
held(Spec, Keys) -> maps:from_list([{I, {S, W}} || {I, S, W} <- lookup_many(Spec, 0, Keys)]).

row_frame(Held, K) ->
    case Held of
        #{K := {S, W}} -> [<<(byte_size(K)):16>>, K, <<1, (digest(0, K, S, W)):32, (la(S)):64/signed>>];
        #{} -> [<<(byte_size(K)):16>>, K, <<0>>]
    end.

%% lookup(Spec, Mode, Id) -> [{Id, S, W}]: the row of Id if the digest Mode
%% can take it. Mnesia: a dirty read, which on a node with a local copy
%% (of_ids/3 checks it) reads that copy.
lookup({ets, Tab}, _, Id) -> [{I, S, none} || {I, S} <- ets:lookup(Tab, Id), is_map(S)];
lookup({dets, Tab, _, _, _}, _, Id) ->
    case dets:lookup(Tab, Id) of
        {error, E} -> fail(migctl_lib:error_text("dets", E));
        L -> [{I, S, none} || {I, S} <- L, is_map(S)]
    end;
lookup({mnesia, Tab}, Mode, Id) ->
    [{I, S, W} || {_, I, S, W} <- mnesia:dirty_read(Tab, Id), Mode =:= record orelse is_map(S)].

%% lookup_many(Spec, Mode, Ids) -> [{Id, S, W}]: lookup/3 of every id, each
%% row once, in no particular order. A DETS file is asked ?LOOKUP_KEYS keys
%% per request (dets:lookup_keys/2: exported but not documented, what
%% qlc's DETS tables use), not one request per key. On an idle file the
%% two cost the same (18,000 keys of the 1.8M-session file: 0.22-0.29 s
%% one at a time, 0.30-0.32 s in requests of 500); beside the
%% application's traffic each request waits for a turn of a busy DETS
%% server, and one turn per key made the ~18,000 keys a check reads back
%% take minutes on the node holding the big file (8 writers beside 18,000
%% keys of a 300k file: 10.5 s one at a time, 0.77 s in requests of 256).
%% Where dets has no lookup_keys/2, one lookup per key.
lookup_many({dets, Tab, _, _, _} = Spec, Mode, Ids) ->
    lists:append([dets_keys(Spec, Mode, Tab, C) || C <- chunks(lists:usort(Ids), ?LOOKUP_KEYS)]);
lookup_many(Spec, Mode, Ids) ->
    lists:flatmap(fun(Id) -> lookup(Spec, Mode, Id) end, lists:usort(Ids)).

dets_keys(_, _, _, []) -> [];
dets_keys(Spec, Mode, Tab, Keys) ->
    try dets:lookup_keys(Tab, Keys) of
        {error, E} -> fail(migctl_lib:error_text("dets", E));
        L -> [{I, S, none} || {I, S} <- L, is_map(S)]
    catch error:undef ->
        lists:flatmap(fun(Id) -> lookup(Spec, Mode, Id) end, Keys)
    end.

%% chunks(L, N): L cut into lists of at most N, in order.
chunks([], _) -> [];
chunks(L, N) when length(L) =< N -> [L];
chunks(L, N) -> {H, T} = lists:split(N, L), [H | chunks(T, N)].

%% content_frame(Id, S): the frame keys/3 writes by default, for the
%% listings of migctl_check's samples.
content_frame(Id, S) -> frame(0, false, Id, S, none).
