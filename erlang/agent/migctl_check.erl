%% migctl_check: the node-side half of `migctl consistency' that is not
%% bucket sums: samples, reads by id, the native reference.
%%
%% The bucket protocol (the sums of many hash ranges in one pass, the
%% keys of the buckets that differ, the digests) is migctl_buckets's; the
%% Go side calls it directly. What is here: read a batch of sessions by id
%% without touching them, the digests of given ids, which ids a store
%% holds, random samples without a scan (hash slots of ETS and DETS
%% tables), the size of a store's data, and the native comparison that
%% `make bench' measures migctl against.
%%
%% Listings are <<IdLen:32, Id/binary, Digest:32, LastAccessed:64/signed>>*
%% (migctl_buckets:content_frame/2: the content digest, last_accessed apart
%% so the caller applies its tolerance exactly).
%%
%% Contract (as migctl_agent): store specs {ets, Tab} | {dets, Tab, File,
%% Create, Owner} | {mnesia, Tab}; every exported function catches
%% everything and returns {ok, ...} | {error, Atom | Binary}; sessions only
%% ever leave as term_to_binary blobs inside binaries.
-module(migctl_check).

-export([version/0, get_many/2, native_compare/3,
         slot_sample/3, data_size/1, digests_of/2, members_of/2,
         dets_next/1, dets_slot_rows/3, dets_slot_listing/3,
         sample_draw/4, sample_lookup/3]).

-define(VSN, 2).
-define(M32, 4294967296).

-import(migctl_lib, [safe/1, fail/1, odd_reset/0, odd_row/1, odd/0, key/2]).
-import(migctl_buckets, [ready/1, content_frame/2]).
-import(migctl_dets, [slot_objects/2, raw_open/2, raw_close/1, raw_slots/3]).

version() -> {ok, ?VSN}.

%% digests_of(Spec, <<IdLen:32, Id/binary>>*) -> {ok, Rows, N}
%% The listing of the given ids that are present (a sample drawn by
%% slot_sample/3 is compared this way, without a scan):
%% migctl_buckets:of_ids/3 with the content digest.
digests_of(Spec, IdsBin) -> migctl_buckets:of_ids(Spec, IdsBin, []).

%% members_of(Spec, <<IdLen:32, Id/binary>>*) -> {ok, <<IdLen:32, Id/binary>>*, N}
%% The given ids that are present. A sample asks this of the source for
%% the ids it drew from the target: present ones leave the sample, so only
%% presence matters, and a DETS file answers it (dets:member/2) without
%% decoding the session, a third cheaper than a lookup.
members_of(Spec, IdsBin) ->
    safe(fun() ->
        _ = ready(Spec),
        Present = [Id || Id <- migctl_lib:ids(IdsBin), member(Spec, Id)],
        {ok, iolist_to_binary([[<<(byte_size(Id)):32>>, Id] || Id <- Present]), length(Present)}
    end).

member({dets, Tab, _, _, _}, Id) ->
    case dets:member(Tab, Id) of
        B when is_boolean(B) -> B;
        {error, E} -> fail(migctl_lib:error_text("dets", E))
    end;
member(Spec, Id) -> lookup(Spec, Id) =/= [].

%% --------------------------------------------------------------- get_many

%% get_many(Spec, <<IdLen:32, Id/binary>>*) -> {ok, Frames, N}
%% Frames as migctl_agent:stream/3, for the ids present; absent ids are
%% left out. Reads do not touch the sessions (no last_accessed rewrite).
get_many(Spec, IdsBin) ->
    safe(fun() ->
        _ = ready(Spec),
        Ids = migctl_lib:ids(IdsBin),
        Rows = [{I, S} || {I, S, _} <- migctl_buckets:lookup_many(Spec, 0, Ids)],
        {ok, iolist_to_binary([migctl_lib:enc(Id, S) || {Id, S} <- Rows]), length(Rows)}
    end).

%% lookup(Spec, Id) -> [{Id, Session}]: the session, if Id holds one.
lookup(Spec, Id) -> [{I, S} || {I, S, _} <- migctl_buckets:lookup(Spec, 0, Id)].

%% ------------------------------------------------------------ slot sample

%% slot_sample(Spec, N, Seed) ->
%%   {ok, <<IdLen:32, Id/binary, Digest:32, LastAccessed:64/signed>>*, Count, Odd}
%% About N rows drawn at random from the store without scanning it: random
%% hash slots of the table (ets:slot/2, dets:slot/2), every row of a drawn
%% slot, listed as digests/3 lists them. ETS set tables (Mnesia's local
%% copies) and DETS files hash keys into slots, so each key is drawn with
%% (nearly) the same probability; an ordered_set (erlmcp's ETS backend) has
%% one key per slot position.
slot_sample(Spec, N, Seed) ->
    safe(fun() ->
        Size = ready(Spec),
        _ = rand:seed(exsss, Seed),
        {SlotFun, Slots} = slots(Spec, Size),
        Want = min(N, Size),
        {Rows, Odd} = draw(SlotFun, Slots, Want, 0, 10 * Want + 100, {#{}, #{}}),
        odd_reset(),
        _ = [odd_row(K) || K <- maps:keys(Odd)],
        {ok, iolist_to_binary([content_frame(I, S) || {I, S} <- maps:to_list(Rows)]), map_size(Rows), odd()}
    end).

slots({ets, Tab}, _) ->
    {fun(I) -> ets:slot(Tab, I) end, slot_count_ets(Tab)};
slots({dets, Tab, _, _, _}, _) ->
    %% no_slots is {Min, Used, Max}; Used slots hold the rows.
    Used = case dets:info(Tab, no_slots) of
               {_, U, _} -> U;
               U -> U
           end,
    {fun(I) -> dets:slot(Tab, I) end, Used};
slots({mnesia, Tab}, _) ->
    migctl_lib:local_copy(Tab),
    {fun(I) -> [case R of
                    {_, Id, S, _} -> {Id, S};
                    _ -> {odd, key(mnesia, R)}
                end || R <- ets:slot(Tab, I)] end, slot_count_ets(Tab)}.

%% ETS does not say how many slots a set has; ets:slot/2 fails with badarg
%% past the last one and returns '$end_of_table' at it. For an ordered_set
%% the slots are the positions 0..size-1.
slot_count_ets(Tab) ->
    case ets:info(Tab, type) of
        ordered_set -> ets:info(Tab, size);
        _ -> find_slots(Tab, 256)
    end.

find_slots(Tab, N) ->
    case catch ets:slot(Tab, N) of
        '$end_of_table' -> N;
        L when is_list(L) -> find_slots(Tab, 2 * N);
        _ -> bisect_slots(Tab, N div 2, N)
    end.

%% Lo is a valid slot, Hi is not (or end): find the first '$end_of_table'.
bisect_slots(_Tab, Lo, Hi) when Hi - Lo =< 1 -> Hi;
bisect_slots(Tab, Lo, Hi) ->
    M = (Lo + Hi) div 2,
    case catch ets:slot(Tab, M) of
        L when is_list(L) -> bisect_slots(Tab, M, Hi);
        _ -> bisect_slots(Tab, Lo, M)
    end.

%% draw(...) -> {Sessions, Odd}: Odd maps the keys of the drawn rows that
%% are not sessions (a slot drawn twice counts them once).
draw(_, _, Want, _, _, {Acc, _} = R) when map_size(Acc) >= Want -> R;
draw(_, _, _, Tries, Max, R) when Tries >= Max -> R;
draw(_, Slots, _, _, _, R) when not is_integer(Slots); Slots =< 0 -> R;
draw(SlotFun, Slots, Want, Tries, Max, Acc) ->
    I = rand:uniform(Slots) - 1,
    Rows = case catch SlotFun(I) of
               L when is_list(L) -> L;
               _ -> []
           end,
    Acc2 = lists:foldl(fun({Id, S}, {A, O}) when is_binary(Id), is_map(S) -> {A#{Id => S}, O};
                          ({odd, K}, {A, O}) -> {A, O#{K => true}};
                          (Row, {A, O}) -> {A, O#{key(dets, Row) => true}}
                       end, Acc, Rows),
    draw(SlotFun, Slots, Want, Tries + 1, Max, Acc2).

%% -------------------------------------------------- sample by DETS slots
%%
%% A DETS file is a linear hash table: the slot of a key is a function of
%% phash2(Key) and the file's slot count (Next) alone (dets_v9:db_hash/2:
%% M is the largest power of two =< Next, N = Next - M; Slot = H band
%% (M - 1), or H band (2M - 1) when that is below N). So a random set of
%% the file's slots is a random set of hash buckets that ANY store can
%% list, by computing the same function over its own keys. A sample is
%% then: every row of the drawn slots in the DETS file (one dets:slot each,
%% the only random reads) and every row of the other store whose key falls
%% in them (one pass over an ETS table, on its own node, at the same
%% time). Every session of the union is in it with the same chance, and no
%% key is looked up one at a time on the DETS side (a random read of a
%% DETS file costs ~45 us through its server, whatever the call).

%% dets_next(Spec) -> {ok, Next, HashMethod}: the slot count the slot
%% function needs; HashMethod phash2 (files made by OTP >= R12) or phash.
dets_next({dets, Tab, _, _, _} = Spec) ->
    safe(fun() ->
        _ = ready(Spec),
        {ok, migctl_dets:used_slots(Tab), dets:info(Tab, hash)}
    end);
dets_next(_) -> {error, not_dets}.

%% dets_slot_rows(Spec, <<Slot:32>>*, Next) -> {ok, Digests, N, Odd}
%% Every row of the given slots, listed as digests/3 lists them. Each
%% row's key is checked against the slot function with Next: should DETS
%% ever place keys otherwise (another OTP), the reply is
%% {error, slot_function_mismatch} and migctl draws another way. A file
%% that grew meanwhile (Next changed: a live table) is not checked, since
%% its keys moved; the sample is then slightly short, see the package doc.
dets_slot_rows({dets, Tab, _, _, _} = Spec, SlotsBin, Next) ->
    safe(fun() ->
        _ = ready(Spec),
        odd_reset(),
        Rows = lists:append([[{I, R} || R <- slot_objects(Tab, I)] || <<I:32>> <= SlotsBin]),
        Still = migctl_dets:used_slots(Tab) =:= Next,
        _ = [fail(slot_function_mismatch) || Still, {I, R} <- Rows, migctl_dets:slot(key(dets, R), Next) =/= I],
        Sessions = lists:filtermap(fun({_, {Id, S}}) when is_binary(Id), is_map(S) -> {true, {Id, S}};
                                      ({_, R}) -> odd_row(key(dets, R)), false
                                   end, Rows),
        {ok, iolist_to_binary([content_frame(I, S) || {I, S} <- Sessions]), length(Sessions), odd()}
    end).

%% dets_slot_listing(Spec, <<Slot:32>>*, Next) -> {ok, Digests, N, Odd}
%% The other side of a DETS-slot sample: one pass over this store's KEYS
%% (a select that copies out the key only: copying every session out of
%% the table, as a fold does, cost 1.5 s of the 1.9 s a sample took at 1M
%% sessions), the slot of each, and a lookup of the few that fall in one
%% of the slots (of a DETS file of Next slots), listed as digests/3 lists
%% them. Odd: the rows in those slots that are not sessions.
dets_slot_listing(Spec, SlotsBin, Next) ->
    safe(fun() ->
        _ = ready(Spec),
        Set = maps:from_list([{I, []} || <<I:32>> <= SlotsBin]),
        M = migctl_dets:m(Next),
        In = fun(K) -> maps:is_key(migctl_dets:slot(K, M, Next), Set) end,
        Keys = select_keys(Spec, In),
        odd_reset(),
        Rows = lists:flatmap(fun(K) when is_binary(K) ->
                                     case lookup(Spec, K) of
                                         [] -> odd_row(K), [];
                                         L -> L
                                     end;
                                (K) -> odd_row(K), []
                             end, Keys),
        {ok, iolist_to_binary([content_frame(I, S) || {I, S} <- Rows]), length(Rows), odd()}
    end).

%% select_keys(Spec, In) -> the keys K of the store with In(K), read in
%% chunks of keys only. The session shape first: a pattern that binds the
%% key is matched fastest (1M keys of an ETS table, chunks of 1,000:
%% 0.29 s; a body element(1, '$1') for every row, chunks of 10,000: 0.98
%% s); the second clause picks up the keys of rows of any other shape.
select_keys({ets, Tab}, In) ->
    keys_loop(ets:select(Tab, [{{'$1', '_'}, [], ['$1']}, {'$1', [], [{element, 1, '$1'}]}], 1000), fun ets:select/1, In, []);
select_keys({mnesia, Tab}, In) ->
    migctl_lib:local_copy(Tab),
    keys_loop(ets:select(Tab, [{{'_', '$1', '_', '_'}, [], ['$1']}, {'$1', [], [{element, 2, '$1'}]}], 1000), fun ets:select/1, In, []);
select_keys({dets, Tab, _, _, _}, In) ->
    keys_loop(dets:select(Tab, [{{'$1', '_'}, [], ['$1']}, {'$1', [], [{element, 1, '$1'}]}], 1000), fun dets:select/1, In, []).

keys_loop('$end_of_table', _, _, Acc) -> Acc;
keys_loop({error, E}, _, _, _) -> fail(migctl_lib:error_text("select", E));
keys_loop({Keys, Cont}, Next, In, Acc) ->
    keys_loop(Next(Cont), Next, In, [K || K <- Keys, In(K)] ++ Acc).

%% ------------------------------------------------------------ sample draw
%%
%% How `migctl consistency check --sample' draws (consistency/check.go,
%% slotList): each side draws a random set of its own hash slots, every
%% slot with the same probability Num/Den, and lists every row of them
%% (sample_draw/4, one call); then each side is asked about the other's
%% draw (sample_lookup/3, one call per batch). A key is in a drawn slot
%% with probability Num/Den whatever the slot holds, so each side's draw
%% is a uniform sample of its keys at that rate, and the Go side counts a
%% key held by both only when the source drew it: uniform over the union.
%%
%% A DETS file answers through its server one slot or one key a request
%% (~100 us each on a loaded node: 10,000 of them were the whole cost of a
%% sample at 1M). So the drawn slots are read from the file directly, in
%% one batch of preads (migctl_dets, which a full pass of migctl_buckets
%% shares): the file layout is dets_v9's (private to OTP, so it is
%% checked, not trusted). The DETS server's write cache is flushed
%% first (dets:slot/2 does that), a few slots are compared with what the
%% server reads (any difference: every slot through the server), and
%% every slot read directly is validated (the collection header, the
%% status, every object decodes, every key hashes to that slot); a slot
%% that fails (rewritten meanwhile by a live writer) is read again through
%% the server. What the file held a moment ago can still be read under a
%% live writer, as through the server: a sample's suspects are always read
%% again by key before anything is reported.

%% sample_draw(Spec, Num, Den, Seed) ->
%%   {ok, <<IdLen:32, Id/binary, Digest:32, LastAccessed:64/signed>>*, N, Odd, Method}
%% Every row of a random set of the store's hash slots, each slot drawn
%% with probability Num/Den (K slots without replacement, K = Slots*Num/Den
%% rounded at random so that its mean is exact), listed as digests/3 lists
%% them; Odd: the drawn rows that are not sessions; Method: ets | raw
%% (a DETS file read directly) | server (through the DETS server). The
%% same Seed on the same store draws the same slots.
sample_draw(Spec, Num, Den, Seed) when is_integer(Num), Num >= 0, is_integer(Den), Den > 0, is_integer(Seed) ->
    safe(fun() ->
        _ = ready(Spec),
        _ = rand:seed(exsss, Seed),
        with_slots(Spec, fun(NSlots, Read, Method) ->
            Slots = lists:sort(floyd(NSlots, draw_count(NSlots, Num, Den))),
            {Frames, OddKeys} = split_rows(Read(Slots, fun frame_of/1)),
            odd_reset(),
            _ = [odd_row(K) || K <- OddKeys],
            {ok, iolist_to_binary(Frames), length(Frames), odd(), Method}
        end)
    end);
sample_draw(_, _, _, _) -> {error, badarg}.

%% sample_lookup(Spec, <<IdLen:32, Id/binary>>*, What) -> {ok, Bin, N, Method}
%% The other side's draw asked of this store: What = members, Bin the
%% ids present (<<IdLen:32, Id>>*); What = digests, Bin the listing of the
%% ids present (as sample_draw/4). A DETS file reads the slots the keys
%% hash to directly (see above); other stores look the keys up.
sample_lookup(Spec, IdsBin, What) when What =:= members; What =:= digests ->
    safe(fun() ->
        _ = ready(Spec),
        Ids = migctl_lib:ids(IdsBin),
        Emit = case What of
                   members -> fun({odd, _} = Odd) -> Odd; ({Id, _}) -> {Id, [<<(byte_size(Id)):32>>, Id]} end;
                   digests -> fun frame_of/1
               end,
        {Rows, Method} = lookup_rows(Spec, Ids, Emit),
        {ok, iolist_to_binary([B || {_, B} <- Rows]), length(Rows), Method}
    end);
sample_lookup(_, _, _) -> {error, badarg}.

%% frame_of(Row): a session's listing frame, made as soon as the row is
%% read so that only frames (not sessions) pile up in the heap: keeping
%% 10,000 decoded sessions until the end cost more in garbage collection
%% than reading them.
frame_of({odd, _} = Odd) -> Odd;
frame_of({Id, S}) -> {Id, iolist_to_binary(content_frame(Id, S))}.

%% lookup_rows(Spec, Ids, Emit) -> {[Emitted], Method}: Emit({Id, Session})
%% of the sessions of Ids the store holds.
lookup_rows({dets, _, _, _, _} = Spec, Ids, Emit) ->
    with_slots(Spec, fun(Next, Read, Method) ->
        M = migctl_dets:m(Next),
        Want = maps:from_list([{I, true} || I <- Ids]),
        Keep = fun({I, _} = R) when is_binary(I) ->
                       case maps:is_key(I, Want) of
                           true -> Emit(R);
                           false -> skip
                       end;
                  (_) -> skip
               end,
        {[E || {_, _} = E <- Read(lists:usort([migctl_dets:slot(I, M, Next) || I <- Ids]), Keep)], Method}
    end);
lookup_rows({mnesia, Tab} = Spec, Ids, Emit) ->
    migctl_lib:local_copy(Tab),
    {[Emit(R) || Id <- Ids, R <- lookup(Spec, Id)], ets};
lookup_rows(Spec, Ids, Emit) ->
    {[Emit(R) || Id <- Ids, R <- lookup(Spec, Id)], ets}.

%% split_rows(Items) -> {[Frame], [OddKey]}, each key once (an ETS table
%% rehashed while it is read can show a key in two slots).
split_rows(Items) ->
    {S, O} = lists:foldl(fun({odd, K}, {A, O}) -> {A, O#{K => true}};
                            ({Id, F}, {A, O}) -> {A#{Id => F}, O}
                         end, {#{}, #{}}, Items),
    {maps:values(S), maps:keys(O)}.

%% draw_count(Slots, Num, Den): Slots*Num/Den, the fraction rounded up with
%% that probability.
draw_count(Slots, Num, Den) when Num >= Den -> Slots;
draw_count(Slots, Num, Den) ->
    K = Slots * Num div Den,
    R = Slots * Num rem Den,
    case R > 0 andalso rand:uniform(Den) =< R of
        true -> min(K + 1, Slots);
        false -> K
    end.

%% floyd(N, K): K distinct integers of [0, N) drawn uniformly (Floyd's
%% algorithm: K steps whatever N is).
floyd(N, K) when K >= N -> lists:seq(0, N - 1);
floyd(N, K) -> maps:keys(floyd(N - K, N, #{})).

floyd(J, N, Acc) when J >= N -> Acc;
floyd(J, N, Acc) ->
    X = rand:uniform(J + 1) - 1,
    case maps:is_key(X, Acc) of
        true -> floyd(J + 1, N, Acc#{J => true});
        false -> floyd(J + 1, N, Acc#{X => true})
    end.

%% with_slots(Spec, F) -> F(NSlots, Read, Method): Read(Slots, Emit) reads
%% the given slots (ascending) and returns Emit of each row, a row being
%% {Id, Session} or {odd, Key} (a row that is not a session).
with_slots({ets, Tab}, F) ->
    F(slot_count_ets(Tab), fun(Is, Emit) -> [Emit(R) || I <- Is, R <- ets_slot_rows(ets, Tab, I)] end, ets);
with_slots({mnesia, Tab}, F) ->
    migctl_lib:local_copy(Tab),
    F(slot_count_ets(Tab), fun(Is, Emit) -> [Emit(R) || I <- Is, R <- ets_slot_rows(mnesia, Tab, I)] end, ets);
with_slots({dets, Tab, _, _, _}, F) ->
    Next = migctl_dets:used_slots(Tab),
    case raw_open(Tab, Next) of
        {ok, Raw} ->
            try F(Next, fun(Is, Emit) -> raw_read(Raw, Is, Emit) end, raw)
            after raw_close(Raw)
            end;
        no ->
            F(Next, fun(Is, Emit) -> [Emit(R) || I <- Is, R <- norm(dets, slot_objects(Tab, I))] end, server)
    end.

ets_slot_rows(Kind, Tab, I) ->
    case catch ets:slot(Tab, I) of
        L when is_list(L) -> norm(Kind, L);
        _ -> []
    end.

norm(mnesia, Rows) ->
    [case R of
         {_, Id, S, _} when is_binary(Id), is_map(S) -> {Id, S};
         _ -> {odd, key(mnesia, R)}
     end || R <- Rows];
norm(Kind, Rows) ->
    [case R of
         {Id, S} when is_binary(Id), is_map(S) -> {Id, S};
         _ -> {odd, key(Kind, R)}
     end || R <- Rows].

%% raw_read(Raw, Slots, Emit): with_slots/2's Read for a file read
%% directly, the slots that do not validate read through the server.
raw_read({raw, _, Tab, _, _} = Raw, Slots, Emit) ->
    lists:append(raw_slots(Raw, Slots, fun(_, {ok, Objs}) -> [Emit(R) || R <- norm(dets, Objs)];
                                          (I, retry) -> [Emit(R) || R <- norm(dets, slot_objects(Tab, I))]
                                       end)).

%% --------------------------------------------------------- native compare

%% native_compare(SpecA, SpecB, Buckets) -> {ok, DifferingBuckets, Micros}
%% The reference that `make bench' measures migctl against: a loop on this
%% node that checksums both stores (one after the other, as a script on the
%% node would) in Buckets hash buckets and compares the sums. Both stores
%% must be readable here (Mnesia needs a local copy).
native_compare(SpecA, SpecB, Buckets) ->
    safe(fun() ->
        T0 = erlang:monotonic_time(microsecond),
        R = <<0:64, ?M32:64, Buckets:32>>,
        _ = ready(SpecA),
        _ = ready(SpecB),
        {A, _} = migctl_buckets:sums_local(SpecA, R, []),
        {B, _} = migctl_buckets:sums_local(SpecB, R, []),
        Diff = length([x || {<<X:96>>, <<Y:96>>} <- lists:zip(chunks(A), chunks(B)), X =/= Y]),
        {ok, Diff, erlang:monotonic_time(microsecond) - T0}
    end).

chunks(<<>>) -> [];
chunks(<<C:12/binary, Rest/binary>>) -> [C | chunks(Rest)].

%% data_size(Spec) -> {ok, Bytes, Rows}: what shipping every row would cost
%% (ids plus the sessions' external size), the yardstick for the bytes a
%% check moves.
data_size(Spec) ->
    safe(fun() ->
        _ = ready(Spec),
        Key = make_ref(),
        put(Key, {0, 0}),
        _ = migctl_buckets:fold(Spec, 0, fun(Id, S, _) ->
                                             {B, N} = get(Key),
                                             put(Key, {B + byte_size(Id) + erlang:external_size(S), N + 1})
                                     end, #{reset => fun() -> put(Key, {0, 0}) end}),
        {B, N} = erase(Key),
        {ok, B, N}
    end).
